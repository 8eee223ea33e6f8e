"""The compliance names and the wording that asks about the vendor's standing on one."""

from __future__ import annotations

import pytest

from knowledge.off_topic import (
    BUNDLED_COMPLIANCE,
    ComplianceNames,
    OffTopicExamplesError,
    read_compliance_names,
)


@pytest.fixture(scope="module")
def compliance() -> ComplianceNames:
    return ComplianceNames(read_compliance_names(BUNDLED_COMPLIANCE))


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("Is Lumora HIPAA compliant? Will you sign a BAA?", ["hipaa", "baa"]),
        ("can you send our auditors your SOC-2 type II report", ["soc 2"]),
        ("we need your soc2 and ISO/IEC 27001 certificates", ["soc 2", "iso 27001"]),
        ("are you FedRAMP authorized?", ["fedramp"]),
        ("is checkout pci-dss compliant", ["pci dss"]),
        ("Is Lumora 21 CFR Part 11 compliant?", ["21 cfr part 11"]),
        ("Is Lumora DORA compliant?", ["digital operational resilience act"]),
        ("are you HDS certified?", ["hds certification"]),
        ("can you add Dora to the channel?", []),  # a person's name, not the regulation
        # Inside other words or near misses: nothing.
        ("my guitar and socks are in the photo", []),
        ("the hippo app is down", []),
    ],
)
def test_the_bundled_names_are_found_in_their_usual_spellings(compliance, text, names):
    assert compliance.named_in(text) == names


@pytest.mark.parametrize(
    ("text", "claimed"),
    [
        # A question to or about the vendor, whatever else the message says.
        ("is lumora hipaa compliant?", ["hipaa"]),
        ("Is Lumora HIPAA-compliant?", ["hipaa"]),
        ("Are you ISO-27001 certified?", ["iso 27001"]),
        ("does lumora cloud have a FedRAMP Moderate authorization", ["fedramp"]),
        ("do you sign a HIPAA BAA?", ["hipaa", "baa"]),
        ("Do you guys sign BAAs?", ["baa"]),
        ("We're a credit union. Does Lumora meet PIPEDA requirements?", ["pipeda"]),
        ("does it comply with coppa", ["coppa"]),
        ("Is the Lumora mobile app WCAG 2.1 AA compliant?", ["wcag"]),
        ("Is there a BAA available for Lumora?", ["baa"]),
        ("what uptime SLA does Lumora Cloud guarantee?", ["uptime sla"]),
        ("We need HIPAA so is Lumora HIPAA compliant?", ["hipaa"]),
        ("Were you SOC 2 audited last year?", ["soc 2"]),
        ("Is Lumora GDPR compliant and does it also meet HIPAA?", ["gdpr", "hipaa"]),
        ("Does Lumora hold any certifications like SOC 2 or ISO 27001?", ["soc 2", "iso 27001"]),
        ("Can you please confirm whether Lumora Cloud is HIPAA compliant?", ["hipaa"]),
        ("Lumora is SOC 2 certified?", ["soc 2"]),
        ("Is Lumora 'HIPAA compliant'?", ["hipaa"]),
        ("Is Lumora PCI certified?", ["pci dss"]),
        ("Has Lumora ever had a third-party penetration test?", ["penetration test"]),
        ("r u hipaa compliant", ["hipaa"]),
        ("Will you sign our BAA?", ["baa"]),
        ("Can Lumora Cloud be used for HIPAA workloads?", ["hipaa"]),
        ("which SOC 2 report do you have?", ["soc 2"]),
        ("what uptime SLA does the Lumora service guarantee?", ["uptime sla"]),
        ("which HIPAA safeguards does the mobile app have?", ["hipaa"]),
        # "your", or the product's own name with 's, before the name.
        ("can u send over your SOC2 Type II report?", ["soc 2"]),
        ("What is Lumora's HIPAA stance?", ["hipaa"]),
        # A bare question about names.
        ("Evaluating Lumora for our clinic. HIPAA compliant?", ["hipaa"]),
        ("south african company here - POPIA?", ["popia"]),
        ("what about CCPA and LGPD?", ["lgpd"]),  # the sample documents name CCPA
        # A request for the vendor's document.
        ("Can we get a copy of the SOC 2 Type II?", ["soc 2"]),
        ("Where can I download the VPAT?", ["vpat"]),
        ("can we get a copy of your latest pen test report?", ["penetration test"]),
        ("We need proof of SOC 2 compliance before we sign.", ["soc 2"]),
        # The customer's own reason for a how-to, in one clause or another.
        ("our HIPAA policy says old messages must be deleted. how do i set that up?", []),
        ("for HIPAA compliance we need automatic deletion after 30 days", []),
        ("We have to be HIPAA compliant, so how do I make messages auto-delete?", []),
        ("Our company is ISO 27001 certified; how do I export the list of admins?", []),
        ("As part of GLBA compliance (we're a bank), can i turn off public channels?", []),
        ("For our SOX audit I need all messages from two users as a CSV", []),
        ("I need to generate SOX reports from the audit log. Where is it?", []),
        ("SOC 2 auditors want SSO on every app. how do we set up SAML?", []),
        ("ISO 27001 access control: can Lumora deactivate users through SCIM?", []),
        ("we need to comply with HIPAA, how do i hide message text in emails?", []),
        ("Can you help us meet HIPAA by turning off previews in email?", []),
        ("Is it possible to meet HIPAA retention rules with a retention policy?", []),
        ("How can I make it meet our SOX retention rules?", []),
        ("Do you have a guide on setting retention for HIPAA?", []),
        ("I read your docs. HIPAA requires us to purge messages; how do I set that up?", []),
        ("testing against WCAG 2.1 AA flagged the faint timestamps", []),
        ("what HIPAA settings do we need to change?", []),
        # "the" is the vendor only when its name or a word such as app or service follows.
        ("what SOC 2 evidence does the auditor want?", []),
        ("which HIPAA rules do the settings cover?", []),
        ("HIPAA compliant", []),  # a bare mention, not a question
        ("HIPAA, SOX and FINRA all apply to us. how do I keep every message?", []),
        ("Does Lumora support SAML for SOC 2?", []),
        ("Can it export to CSV for SOX?", []),
        ("Where can I download the audit log for SOX evidence?", []),
        ("Where do I get the message export for the SOX audit report?", []),
        ("How do I use your retention feature for HIPAA?", []),
        ("Is there SLA tracking in Lumora?", []),
        ("our SLA says we answer within an hour. how do i get notified of every message?", []),
    ],
)
def test_only_a_question_about_the_vendors_standing_is_a_claim(compliance, text, claimed):
    names = [n for n in compliance.named_in(text) if n != "ccpa"]
    assert compliance.claimed(text, names, own_names=["lumora"]) == claimed


def test_a_names_line_without_letters_or_digits_names_nothing():
    names = ComplianceNames(["-", "hipaa | ."])

    assert names.names == ["hipaa"]
    assert names.named_in("is it - . compliant") == []
    with pytest.raises(OffTopicExamplesError):
        ComplianceNames(["-", "  / "])


def test_a_names_file_with_a_byte_order_mark_reads_its_first_name(tmp_path):
    names = tmp_path / "names.txt"
    names.write_bytes("\ufeffhipaa\nsoc 2\n".encode())

    assert ComplianceNames.from_file(names).named_in("HIPAA and SOC 2?") == ["hipaa", "soc 2"]
