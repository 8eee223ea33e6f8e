/* Support chat widget: one <script src=".../widget.js" data-site-key="KEY" async> tag adds a chat
   bubble and panel to any page. Plain JavaScript in a Shadow DOM, no dependencies, no requests
   except to the API at the script's own origin. Text from the server, the model or documents
   reaches the page only through textContent/createElement: this file never parses HTML. */
(() => {
  "use strict";
  if (window.SupportChatWidget) return; // the tag was pasted twice

  const script =
    document.currentScript ||
    Array.from(document.getElementsByTagName("script"))
      .reverse()
      .find((s) => /\/widget\.js$/.test(s.src.split(/[?#]/)[0]));
  const SITE_KEY = (script && script.getAttribute("data-site-key")) || "";
  if (!script || !script.src || !SITE_KEY) {
    console.warn("Support chat: add data-site-key=\"...\" to the widget's <script> tag.");
    return;
  }
  const API = new URL(script.src, location.href).origin;
  const STORE_KEY = "supportchat:" + SITE_KEY;
  const REL = "noopener noreferrer nofollow";
  const TEXT = {
    network: "Can't reach support right now. Please try again.",
    generic: "Sorry, something went wrong. Please try again.",
    unavailable: "Chat isn't available on this page.",
    renewed: "Your earlier conversation had expired, so this message starts a new one.",
    ended: "This conversation has ended. Send a message to start a new one.",
    handoff: "Thanks, a person from our support team will follow up.",
    handoffTitle: "Talk to a person",
    handoffHint: "Leave a name and email if you'd like a reply by email. Both are optional.",
    // a ticket opened without an email address: the team has no way to reply yet
    replyTitle: "Get a reply by email",
    replyHint: "Our team can reply by email: leave your address here.",
    // asked for before any question
    firstHint: "Leave your email and a person from our team will get back to you, or type your question first.",
    interrupted: "This answer stopped when the page was closed. Ask again for the whole answer.",
    unanswered: "This message was not answered: the page was closed before the answer began. Send it again for an answer.",
  };
  const SESSION_GONE = ["session_expired", "invalid_token", "unknown_session", "missing_token"];
  const NOT_ALLOWED = ["site_not_allowed", "origin_not_allowed"];

  // ---------------------------------------------------------------- state
  const site = { name: "Support", greeting: "", maxChars: 4000 };
  let session = null; // {session_id, session_token, idle_timeout_s, last_active}
  let creating = null; // the pending POST /sessions, shared by concurrent callers
  let ui = null;
  let wantOpen = null; // the host page's open() or close() before the chat was built
  let busy = false;
  let streaming = null; // AbortController of the answer being streamed
  let followLater = false; // another tab changed the conversation while this one was streaming
  let catchUpTimer = 0; // a second look at a conversation whose answer was still being written
  const CATCH_UP_MS = 2000;
  let unavailable = false;
  let cooldownUntil = 0;
  let cooldownTimer = 0;
  let pinned = true; // keep the log scrolled to the newest message
  let uid = 0;
  const shownTickets = new Set();
  const emailAsked = new Set(); // tickets whose missing email address the form asked for

  const str = (v) => (typeof v === "string" ? v : "");
  const nowS = () => Date.now() / 1000;

  // ---------------------------------------------------------------- storage
  const store = (() => {
    for (const name of ["localStorage", "sessionStorage"]) {
      try {
        const s = window[name];
        s.setItem(STORE_KEY + ":probe", "1");
        s.removeItem(STORE_KEY + ":probe");
        return s;
      } catch (_) {
        // blocked storage (privacy settings, sandboxed frame): try the next one
      }
    }
    return null;
  })();

  function readStored() {
    try {
      const s = JSON.parse(store.getItem(STORE_KEY));
      if (s && typeof s.session_id === "string" && typeof s.session_token === "string") return s;
    } catch (_) {
      // nothing stored, or not ours
    }
    return null;
  }
  function saveSession() {
    try {
      store.setItem(STORE_KEY, JSON.stringify(session));
    } catch (_) {
      // the conversation then lasts as long as the page
    }
  }
  function forgetSession() {
    session = null;
    try {
      store.removeItem(STORE_KEY);
    } catch (_) {
      // nothing to forget
    }
  }
  function touchSession() {
    if (!session) return;
    session.last_active = nowS();
    // Another tab may have started a new conversation meanwhile: that one stays the stored one.
    const stored = readStored();
    if (!stored || stored.session_id === session.session_id) saveSession();
  }
  const idle = (s) => Number(s.idle_timeout_s) > 0 && nowS() - Number(s.last_active || 0) > Number(s.idle_timeout_s);

  // ---------------------------------------------------------------- HTTP
  function failure(status, code, message, retryAfter) {
    const err = new Error(code || "HTTP " + status);
    err.status = status;
    err.code = code || "";
    err.serverMessage = message || "";
    err.retryAfter = retryAfter || 0;
    return err;
  }

  function retrySeconds(header, fromBody) {
    let s = NaN;
    if (header) {
      s = Number(header);
      if (!Number.isFinite(s)) s = (Date.parse(header) - Date.now()) / 1000;
    }
    if (!(s >= 0)) s = Number(fromBody);
    return s >= 0 ? Math.ceil(s) : 0;
  }

  async function readFailure(res) {
    let info = {};
    try {
      const data = await res.json();
      if (data && data.error && typeof data.error === "object") info = data.error;
    } catch (_) {
      // not JSON (a proxy's error page): the status is all we use
    }
    return failure(
      res.status,
      str(info.code),
      str(info.message),
      retrySeconds(res.headers.get("Retry-After"), info.retry_after)
    );
  }

  async function call(method, path, body, headers, signal) {
    let res;
    try {
      res = await fetch(API + path, {
        method,
        signal,
        credentials: "omit",
        headers: Object.assign(body === undefined ? {} : { "Content-Type": "application/json" }, headers),
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (err) {
      throw err && err.name === "AbortError" ? err : failure(0, "network");
    }
    if (!res.ok) throw await readFailure(res);
    return res;
  }

  async function callJson(method, path, body, headers) {
    const res = await call(method, path, body, headers);
    try {
      return await res.json();
    } catch (_) {
      throw failure(res.status, "bad_response");
    }
  }

  const auth = (s) => ({ Authorization: "Bearer " + (s || session).session_token });

  async function loadSite() {
    applySite(await callJson("GET", "/api/v1/sites/" + encodeURIComponent(SITE_KEY)));
  }

  function ensureSession() {
    if (session) return Promise.resolve(session);
    if (!creating) {
      creating = callJson("POST", "/api/v1/sessions", {}, { "X-Site-Key": SITE_KEY })
        .then((data) => {
          session = {
            session_id: String(data.session_id),
            session_token: String(data.session_token),
            idle_timeout_s: Number(data.idle_timeout_s) || 0,
            last_active: nowS(),
          };
          saveSession();
          applySite(data.site);
          return session;
        })
        .finally(() => {
          creating = null;
        });
    }
    return creating;
  }

  const sessionGone = (err) => !!err && (err.status === 401 || err.status === 404) && SESSION_GONE.includes(err.code);

  /* Runs fn with a session, making one if needed; when the stored one has expired on the
     server, starts a new one and runs fn once more. */
  async function withSession(fn, onRenewed) {
    await ensureSession();
    try {
      return await fn();
    } catch (err) {
      if (!sessionGone(err)) throw err;
      forgetSession();
      await ensureSession();
      if (onRenewed) onRenewed();
      return fn();
    }
  }

  // ---------------------------------------------------------------- server-sent events
  /* Calls onEvent(name, data) for each event of a text/event-stream response body. */
  async function readEvents(res, onEvent) {
    let buf = "";
    let name = "";
    let data = [];
    const line = (l) => {
      if (l === "") {
        if (data.length) onEvent(name || "message", data.join("\n"));
        name = "";
        data = [];
        return;
      }
      if (l[0] === ":") return;
      const colon = l.indexOf(":");
      const field = colon < 0 ? l : l.slice(0, colon);
      let value = colon < 0 ? "" : l.slice(colon + 1);
      if (value[0] === " ") value = value.slice(1);
      if (field === "event") name = value;
      else if (field === "data") data.push(value);
    };
    const drain = (final) => {
      const eol = /\r\n|\r|\n/g;
      let start = 0;
      let m;
      while ((m = eol.exec(buf))) {
        // a chunk ending in "\r" may be half of a "\r\n"
        if (!final && m[0] === "\r" && eol.lastIndex === buf.length) break;
        line(buf.slice(start, m.index));
        start = eol.lastIndex;
      }
      buf = buf.slice(start);
      if (final) {
        if (buf) line(buf);
        line("");
      }
    };
    if (!res.body || !res.body.getReader) {
      buf = await res.text();
      drain(true);
      return;
    }
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += decoder.decode(value, { stream: true });
        drain(false);
      }
      buf += decoder.decode();
      drain(true);
    } catch (err) {
      reader.cancel().catch(() => {});
      throw err && (err.name === "AbortError" || err.status !== undefined) ? err : failure(0, "network");
    }
  }

  // ---------------------------------------------------------------- Markdown to DOM
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const k in attrs || {}) {
      const v = attrs[k];
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") el.textContent = v;
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children) if (c !== null && c !== undefined && c !== false) el.append(c);
    return el;
  }

  function icon(d) {
    const NS = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(NS, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("focusable", "false");
    const path = document.createElementNS(NS, "path");
    path.setAttribute("d", d);
    svg.append(path);
    return svg;
  }

  /* An absolute http(s) URL, or null for anything else (javascript:, data:, mailto:, junk). */
  function httpUrl(raw, base) {
    try {
      const url = base ? new URL(raw, base) : new URL(raw);
      return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
    } catch (_) {
      return null;
    }
  }

  const link = (href, ...children) => h("a", { href, target: "_blank", rel: REL }, ...children);

  const INLINE = [
    // [name, sticky pattern]; the first that matches at a position wins
    ["escape", /\\([\\`*_{}[\]()#+\-.!>~|])/y],
    ["code", /(`+)([^`]|[^`][\s\S]*?[^`])\1(?!`)/y],
    ["strong", /\*\*(?=\S)([\s\S]*?\S)\*\*|__(?=\S)([\s\S]*?\S)__(?!\w)/y],
    ["em", /\*(?=[^\s*])([^*]*?[^\s*])\*(?!\*)|_(?=\S)([^_]*?\S)_(?!\w)/y],
    ["link", /\[([^[\]\n]+)\]\(\s*([^\s()]*(?:\([^\s()]*\)[^\s()]*)*)(?:\s+"[^"\n]*")?\s*\)/y],
    ["url", /https?:\/\/[^\s<>()[\]]*[^\s<>()[\].,;:!?'"*_]/y],
  ];

  function renderInline(text, into, inLink) {
    let plain = "";
    let i = 0;
    const flush = () => {
      if (plain) into.append(plain);
      plain = "";
    };
    while (i < text.length) {
      let hit = null;
      if ("\\`*_[h".includes(text[i])) {
        for (const [kind, re] of INLINE) {
          if ((kind === "link" || kind === "url") && inLink) continue;
          if (kind === "url" && i > 0 && /\w/.test(text[i - 1])) continue;
          if (kind === "em" && text[i] === "_" && i > 0 && /\w/.test(text[i - 1])) continue;
          re.lastIndex = i;
          const m = re.exec(text);
          if (m) {
            hit = [kind, m];
            break;
          }
        }
      }
      if (!hit) {
        plain += text[i++];
        continue;
      }
      const [kind, m] = hit;
      i += m[0].length;
      if (kind === "escape") {
        plain += m[1];
        continue;
      }
      if (kind === "link") {
        const href = /^https?:\/\//i.test(m[2]) ? httpUrl(m[2]) : null;
        if (!href) {
          plain += m[0]; // not http(s): shown as the text it is
          continue;
        }
        flush();
        const a = link(href);
        renderInline(m[1], a, true);
        into.append(a);
        continue;
      }
      if (kind === "url") {
        const href = httpUrl(m[0]);
        if (!href) {
          plain += m[0];
          continue;
        }
        flush();
        into.append(link(href, m[0]));
        continue;
      }
      flush();
      if (kind === "code") {
        into.append(h("code", { text: m[2] }));
      } else {
        const el = h(kind);
        renderInline(m[1] !== undefined ? m[1] : m[2], el, inLink);
        into.append(el);
      }
    }
    flush();
  }

  const FENCE = /^\s{0,3}(`{3,}|~{3,})/;
  const BULLET = /^\s*[-*+]\s+(.*)$/;
  const NUMBERED = /^\s*(\d{1,9})[.)]\s+(.*)$/;
  const HEADING = /^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$/;
  const RULE = /^\s{0,3}([-*_])(\s*\1){2,}\s*$/;

  /* The Markdown subset answers use, as DOM nodes: paragraphs, line breaks, emphasis, code,
     fenced code, lists, headings (as bold lines), and http(s) links. An unfinished construct
     (mid-stream) renders as plain text or an open code block until its end arrives. */
  function renderMarkdown(text, into) {
    const lines = String(text).split(/\r\n|\r|\n/);
    let para = null;
    let list = null;
    let item = null;
    const listKind = (l) => (BULLET.test(l) ? "ul" : NUMBERED.test(l) ? "ol" : "");
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i];
      const fence = FENCE.exec(line);
      if (fence) {
        const body = [];
        const end = new RegExp("^\\s{0,3}" + fence[1][0] + "{" + fence[1].length + ",}\\s*$");
        while (++i < lines.length && !end.test(lines[i])) body.push(lines[i]);
        into.append(h("pre", {}, h("code", { text: body.join("\n") })));
        para = list = item = null;
        continue;
      }
      if (!line.trim()) {
        para = null;
        // a blank line between items of one list keeps the list (and its numbering) going
        let next = i + 1;
        while (next < lines.length && !lines[next].trim()) next++;
        if (!list || next >= lines.length || listKind(lines[next]) !== list.localName) list = item = null;
        continue;
      }
      const kind = listKind(line);
      if (kind) {
        const m = kind === "ul" ? BULLET.exec(line) : NUMBERED.exec(line);
        if (!list || list.localName !== kind) {
          list = h(kind);
          if (kind === "ol" && m[1] !== "1") list.start = Number(m[1]);
          into.append(list);
        }
        item = h("li");
        renderInline(kind === "ul" ? m[1] : m[2], item);
        list.append(item);
        para = null;
        continue;
      }
      if (item && /^\s/.test(line)) {
        item.append(h("br"));
        renderInline(line.trim(), item);
        continue;
      }
      list = item = null;
      const heading = HEADING.exec(line);
      if (heading || RULE.test(line)) {
        para = null;
        if (heading) {
          const strong = h("strong");
          renderInline(heading[1], strong);
          into.append(h("p", { class: "heading" }, strong));
        } else {
          into.append(h("hr"));
        }
        continue;
      }
      if (para) para.append(h("br"));
      else into.append((para = h("p")));
      renderInline(line.trim(), para);
    }
  }

  // ---------------------------------------------------------------- styles
  const CSS = `
:host{all:initial}
*,*::before,*::after{box-sizing:border-box}
[hidden]{display:none!important}
.root{--bg:#fff;--fg:#1d2130;--muted:#5b6275;--line:#e2e5ed;--soft:#f3f4f8;--accent:#4338ca;--accent-fg:#fff;--accent-soft:#eceefe;--bot:#f1f3f7;--code:#e6e9f0;--focus:#1d4ed8;--note:#fff7e0;--note-fg:#6b4a00;--note-line:#f0d68a;--shadow:0 18px 50px rgba(20,24,45,.2),0 3px 10px rgba(20,24,45,.1);
font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:var(--fg);-webkit-font-smoothing:antialiased}
@media (prefers-color-scheme:dark){.root{--bg:#16181f;--fg:#e7e9f0;--muted:#a2a8b8;--line:#2c303b;--soft:#1f222b;--accent:#8d94ff;--accent-fg:#0f1024;--accent-soft:#272b4a;--bot:#232631;--code:#2d313d;--focus:#a5b8ff;--note:#2d2718;--note-fg:#f1d79a;--note-line:#5c4a1f;--shadow:0 18px 50px rgba(0,0,0,.55)}}
button,input,textarea{font:inherit;color:inherit}
button{cursor:pointer}
:focus-visible{outline:2px solid var(--focus);outline-offset:2px}
.sr-only{position:absolute;width:1px;height:1px;margin:-1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap;border:0}
.launcher{position:fixed;right:20px;bottom:20px;z-index:2147483000;width:58px;height:58px;border-radius:50%;border:1px solid transparent;background:var(--accent);color:var(--accent-fg);box-shadow:var(--shadow);display:grid;place-items:center;transition:transform .15s ease}
.launcher:hover{transform:scale(1.06)}
.launcher svg{width:28px;height:28px;fill:currentColor}
.launcher span{display:grid}
.root:not(.open) .launcher .when-open,.open .launcher .when-closed{display:none}
.panel{position:fixed;right:20px;bottom:92px;z-index:2147483001;width:384px;max-width:calc(100vw - 40px);height:min(640px,calc(100vh - 116px));display:flex;flex-direction:column;overflow:hidden;background:var(--bg);color:var(--fg);border:1px solid var(--line);border-radius:18px;box-shadow:var(--shadow);animation:rise .18s ease-out}
@keyframes rise{from{opacity:0;transform:translateY(10px) scale(.98)}}
.head{display:flex;align-items:center;gap:2px;padding:12px 10px 12px 18px;background:var(--accent);color:var(--accent-fg)}
.head :focus-visible{outline-color:currentColor}
.title{flex:1;min-width:0}
.name{font-weight:650;font-size:16px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.sub{font-size:12.5px;opacity:.85}
.icon-btn{width:38px;height:38px;flex:none;display:grid;place-items:center;border:0;border-radius:10px;background:transparent}
.icon-btn:hover{background:rgba(255,255,255,.16)}
.icon-btn svg{width:21px;height:21px;fill:currentColor}
.log{flex:1;overflow-y:auto;overscroll-behavior:contain;padding:16px 14px 8px;display:flex;flex-direction:column;gap:12px}
.msg{max-width:88%;overflow-wrap:anywhere}
.msg.user{align-self:flex-end}
.msg.assistant{align-self:flex-start}
.bubble{padding:9px 13px;border-radius:16px}
.user .bubble{background:var(--accent);color:var(--accent-fg);border-bottom-right-radius:5px;white-space:pre-wrap}
.assistant .bubble{background:var(--bot);border-bottom-left-radius:5px}
.msg.system{align-self:center;max-width:94%;font-size:13px;text-align:center;color:var(--note-fg);background:var(--note);border:1px solid var(--note-line);border-radius:10px;padding:6px 12px}
.md p,.md ul,.md ol,.md pre{margin:0 0 .55em}
.md>:last-child{margin-bottom:0}
.md ul,.md ol{padding-left:1.35em}
.md li+li{margin-top:.15em}
.md hr{border:0;border-top:1px solid var(--line);margin:.6em 0}
.md a,.sources a{color:var(--accent);text-decoration:underline;text-underline-offset:2px}
.md code{font:0.88em/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:var(--code);padding:.1em .35em;border-radius:5px}
.md pre{background:var(--code);padding:9px 11px;border-radius:9px;overflow-x:auto;white-space:pre}
.md pre code{background:none;padding:0}
.sources{margin:6px 4px 0;font-size:13px;color:var(--muted)}
.sources-label{font-size:11.5px;font-weight:650;letter-spacing:.05em;text-transform:uppercase}
.sources ol{margin:2px 0 0;padding-left:1.5em}
.sources li{margin-top:2px}
.feedback{display:flex;gap:4px;margin:4px 2px 0}
.feedback button{width:32px;height:30px;display:grid;place-items:center;border:1px solid transparent;border-radius:8px;background:transparent;color:var(--muted)}
.feedback button:hover{background:var(--soft)}
.feedback button[aria-pressed=true]{color:var(--accent);background:var(--accent-soft);border-color:var(--accent)}
.feedback svg{width:17px;height:17px;fill:currentColor}
.comment{margin:6px 2px 0;font-size:13px}
.comment label{display:block;color:var(--muted);margin-bottom:3px}
.row{display:flex;gap:6px}
.row input{flex:1;min-width:0}
input{background:var(--bg);border:1px solid var(--line);border-radius:9px;padding:7px 10px}
.small{border:1px solid var(--accent);background:var(--accent);color:var(--accent-fg);border-radius:9px;padding:6px 12px;font-weight:600}
.small.quiet{background:transparent;color:var(--fg);border-color:var(--line)}
.small:disabled{opacity:.5;cursor:default}
.thanks{margin:6px 4px 0;font-size:13px;color:var(--muted)}
.typing{display:flex;gap:4px;padding:5px 2px}
.typing span{width:7px;height:7px;border-radius:50%;background:var(--muted);animation:blink 1.2s infinite ease-in-out}
.typing span:nth-child(2){animation-delay:.15s}
.typing span:nth-child(3){animation-delay:.3s}
@keyframes blink{0%,80%,100%{opacity:.25;transform:translateY(0)}40%{opacity:1;transform:translateY(-3px)}}
.handoff{padding:12px 16px 14px;border-top:1px solid var(--line);background:var(--soft);display:grid;gap:8px;font-size:14px}
.handoff p{margin:0}
.handoff .hint{font-size:13px;color:var(--muted)}
.handoff label{display:grid;gap:3px;font-size:13px;font-weight:600}
.handoff label input{font-weight:400}
.handoff .row{justify-content:flex-end}
.foot{border-top:1px solid var(--line);padding:10px 12px 8px}
.notice{font-size:13px;color:var(--note-fg);background:var(--note);border:1px solid var(--note-line);border-radius:9px;padding:6px 10px;margin-bottom:8px}
.notice:empty{padding:0;margin:0;border:0}
.composer{display:flex;gap:8px;align-items:flex-end}
textarea{flex:1;min-width:0;resize:none;min-height:44px;max-height:132px;padding:11px 13px;border:1px solid var(--line);border-radius:13px;background:var(--bg);line-height:1.4}
textarea:focus-visible{outline-offset:0;border-color:var(--focus)}
.send{width:44px;height:44px;flex:none;display:grid;place-items:center;border:1px solid transparent;border-radius:13px;background:var(--accent);color:var(--accent-fg)}
.send svg{width:20px;height:20px;fill:currentColor}
.send:disabled{opacity:.45;cursor:not-allowed}
.person{display:inline-flex;align-items:center;gap:5px;margin-top:6px;padding:4px 6px;border:0;border-radius:7px;background:transparent;color:var(--accent);font-size:13px;font-weight:600}
.person:hover{background:var(--accent-soft)}
.person svg{width:16px;height:16px;fill:currentColor}
@media (max-width:480px){
.panel{inset:0;width:100%;max-width:none;height:100%;border:0;border-radius:0;animation:none}
.open .launcher{display:none}
.foot{padding-bottom:max(8px,env(safe-area-inset-bottom))}
textarea{font-size:16px}
}
@media (prefers-reduced-motion:reduce){*{animation:none!important;transition:none!important}}
@media (forced-colors:active){.feedback button[aria-pressed=true]{border-color:Highlight}}
`;

  const ICON = {
    chat: "M4 3h16a2 2 0 0 1 2 2v11a2 2 0 0 1-2 2H8l-4.4 3.5A.5.5 0 0 1 3 21V5a1 1 0 0 1 1-2zm3 6.5a1.5 1.5 0 1 0 0 .01zm5 0a1.5 1.5 0 1 0 0 .01zm5 0a1.5 1.5 0 1 0 0 .01z",
    chevron: "M7.4 8.6 12 13.2l4.6-4.6L18 10l-6 6-6-6z",
    close: "M19 6.4 17.6 5 12 10.6 6.4 5 5 6.4l5.6 5.6L5 17.6 6.4 19l5.6-5.6 5.6 5.6 1.4-1.4-5.6-5.6z",
    compose: "M3 17.3V21h3.8l11-11.1-3.7-3.7zM20.7 7a1 1 0 0 0 0-1.4l-2.3-2.3a1 1 0 0 0-1.4 0l-1.8 1.8 3.7 3.7z",
    send: "M2 21 23 12 2 3v7l15 2-15 2z",
    up: "M1 21h4V9H1zm22-11a2 2 0 0 0-2-2h-6.3l1-4.6v-.3c0-.4-.2-.8-.5-1.1L14.2 1 7.6 7.6C7.2 8 7 8.5 7 9v10a2 2 0 0 0 2 2h9c.8 0 1.5-.5 1.8-1.2l3-7.1c.1-.2.2-.5.2-.7z",
    down: "M15 3H6c-.8 0-1.5.5-1.8 1.2l-3 7.1c-.1.2-.2.5-.2.7v2a2 2 0 0 0 2 2h6.3l-1 4.6v.3c0 .4.2.8.5 1.1L9.8 23l6.6-6.6c.4-.4.6-.9.6-1.4V5a2 2 0 0 0-2-2zm4 0v12h4V3z",
    person: "M12 12a4 4 0 1 0 0-8 4 4 0 0 0 0 8zm0 2c-2.7 0-8 1.3-8 4v2h16v-2c0-2.7-5.3-4-8-4z",
  };

  function addStyles(shadow) {
    // A constructed sheet is not an inline <style>, so a host page's CSP does not block it.
    try {
      const sheet = new CSSStyleSheet();
      sheet.replaceSync(CSS);
      shadow.adoptedStyleSheets = [sheet];
    } catch (_) {
      shadow.append(h("style", { text: CSS }));
    }
  }

  // ---------------------------------------------------------------- the panel
  function build() {
    const id = (name) => "scw-" + name + "-" + ++uid;
    const host = document.createElement("support-chat-widget");
    host.style.setProperty("all", "initial", "important");
    const shadow = host.attachShadow({ mode: "open" });
    addStyles(shadow);

    const panelId = id("panel");
    const inputId = id("input");
    const bubble = h(
      "button",
      { type: "button", class: "launcher", "data-testid": "bubble", "aria-label": "Open support chat", "aria-expanded": "false", "aria-controls": panelId },
      h("span", { class: "when-closed" }, icon(ICON.chat)),
      h("span", { class: "when-open" }, icon(ICON.chevron))
    );
    const name = h("div", { class: "name" });
    const newBtn = h("button", { type: "button", class: "icon-btn", "data-testid": "new-conversation", "aria-label": "New conversation", title: "New conversation" }, icon(ICON.compose));
    const closeBtn = h("button", { type: "button", class: "icon-btn", "data-testid": "close", "aria-label": "Close chat", title: "Close chat" }, icon(ICON.close));
    const log = h("div", { class: "log", role: "log", "aria-live": "polite", "aria-label": "Conversation", tabindex: "0", "data-testid": "log" });

    const nameInput = h("input", { id: id("hname"), type: "text", autocomplete: "name", maxlength: "200", "data-testid": "handoff-name" });
    const emailInput = h("input", { id: id("hemail"), type: "email", autocomplete: "email", maxlength: "254", "data-testid": "handoff-email" });
    const handoffSend = h("button", { type: "submit", class: "small", "data-testid": "handoff-send" }, "Send");
    const handoffCancel = h("button", { type: "button", class: "small quiet", "data-testid": "handoff-cancel" }, "Cancel");
    const handoffForm = h(
      "form",
      { class: "handoff", id: id("handoff"), hidden: true, "aria-label": "Talk to a person", "data-testid": "handoff-form" },
      h("p", {}, h("strong", { "data-testid": "handoff-title" }, TEXT.handoffTitle)),
      h("p", { class: "hint", "data-testid": "handoff-hint" }, TEXT.handoffHint),
      h("label", { for: nameInput.id }, "Name (optional)", nameInput),
      h("label", { for: emailInput.id }, h("span", {}, "Email (optional)"), emailInput),
      h("div", { class: "row" }, handoffCancel, handoffSend)
    );

    const notice = h("div", { class: "notice", role: "status", "data-testid": "notice" });
    const input = h("textarea", { id: inputId, rows: "1", dir: "auto", placeholder: "Write a message…", "data-testid": "input" });
    const send = h("button", { type: "submit", class: "send", "aria-label": "Send", title: "Send", "data-testid": "send" }, icon(ICON.send));
    const composer = h("form", { class: "composer", "data-testid": "composer" }, h("label", { class: "sr-only", for: inputId }, "Message"), input, send);
    const handoffBtn = h(
      "button",
      { type: "button", class: "person", "data-testid": "handoff", "aria-expanded": "false", "aria-controls": handoffForm.id },
      icon(ICON.person),
      "Talk to a person"
    );
    const panel = h(
      "section",
      { class: "panel", id: panelId, role: "dialog", "aria-modal": "false", hidden: true, "data-testid": "panel" },
      h("header", { class: "head" }, h("div", { class: "title" }, name, h("div", { class: "sub" }, "Virtual assistant")), newBtn, closeBtn),
      log,
      handoffForm,
      h("footer", { class: "foot" }, notice, composer, handoffBtn)
    );
    const root = h("div", { class: "root" }, bubble, panel);
    shadow.append(root);
    ui = { shadow, root, bubble, panel, name, closeBtn, log, notice, input, send, composer, handoffBtn, handoffForm, nameInput, emailInput, handoffSend };

    bubble.addEventListener("click", () => setOpen(ui.panel.hidden));
    closeBtn.addEventListener("click", () => setOpen(false, true));
    newBtn.addEventListener("click", newConversation);
    root.addEventListener("keydown", (e) => {
      if (e.key === "Escape" && !ui.panel.hidden) {
        e.preventDefault();
        if (!ui.handoffForm.hidden && ui.handoffForm.contains(ui.shadow.activeElement)) closeHandoff(true);
        else setOpen(false, true);
      } else if (e.key === "Tab" && !ui.panel.hidden && coversScreen()) keepFocusInPanel(e);
    });
    log.addEventListener("scroll", () => {
      pinned = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    });
    composer.addEventListener("submit", (e) => {
      e.preventDefault();
      sendMessage();
    });
    input.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
        e.preventDefault();
        sendMessage();
      }
    });
    input.addEventListener("input", () => {
      autosize();
      checkLength();
    });
    handoffBtn.addEventListener("click", () => (ui.handoffForm.hidden ? openHandoff() : closeHandoff(true)));
    handoffCancel.addEventListener("click", () => closeHandoff(true));
    emailInput.addEventListener("input", () => emailInput.setCustomValidity(""));
    handoffForm.addEventListener("submit", (e) => {
      e.preventDefault();
      submitHandoff();
    });

    paintSite();
    document.body.append(host);
  }

  function applySite(data) {
    if (!data || typeof data !== "object") return;
    if (str(data.name)) site.name = data.name;
    if (typeof data.greeting === "string") site.greeting = data.greeting;
    const max = Math.floor(Number(data.max_message_chars));
    if (max > 0) site.maxChars = max;
    if (ui) paintSite();
  }

  function paintSite() {
    ui.name.textContent = site.name;
    ui.panel.setAttribute("aria-label", site.name + " chat");
    checkLength();
  }

  /* A message over the limit is kept in the box (pasted text is never cut) with a note, and
     Send waits until it is short enough. */
  let tooLong = false;
  function checkLength() {
    const length = [...ui.input.value.trim()].length; // characters as the server counts them (an emoji is one)
    const over = length > site.maxChars;
    if (over) {
      const n = (v) => v.toLocaleString("en-US");
      setNotice(`Your message is ${n(length)} characters long; please keep it to ${n(site.maxChars)} or fewer.`, !tooLong);
    } else if (tooLong) setNotice("", false);
    tooLong = over;
    updateSend();
  }

  function autosize() {
    const input = ui.input;
    input.style.height = "auto";
    input.style.height = Math.min(input.scrollHeight + 2, 132) + "px";
  }

  // Whether the panel was open when this tab left the page: it opens again on the next page of
  // the site (not on a phone, where it would cover the page the customer went to).
  const OPEN_KEY = STORE_KEY + ":open";
  function rememberOpen(open) {
    try {
      window.sessionStorage.setItem(OPEN_KEY, open ? "1" : "0");
    } catch (_) {
      // blocked storage: the panel starts closed, as it would anyway
    }
  }
  function wasOpen() {
    try {
      return window.sessionStorage.getItem(OPEN_KEY) === "1";
    } catch (_) {
      return false;
    }
  }

  function setOpen(open, focusBubble, restoring) {
    if (!ui) {
      wantOpen = open;
      return;
    }
    if (!restoring) rememberOpen(open);
    ui.panel.hidden = !open;
    ui.panel.setAttribute("aria-modal", String(open && coversScreen()));
    ui.root.classList.toggle("open", open);
    ui.bubble.setAttribute("aria-expanded", String(open));
    ui.bubble.setAttribute("aria-label", open ? "Close support chat" : "Open support chat");
    if (open) {
      scrollDown(true);
      // Opened again by a page load: the page keeps its focus, the customer did not ask.
      if (!restoring) (unavailable ? ui.closeBtn : ui.input).focus();
    } else if (focusBubble || ui.shadow.activeElement) {
      ui.bubble.focus();
    }
  }

  // The width at which the open panel covers the whole screen (the CSS's phone layout).
  const PHONE = window.matchMedia("(max-width:480px)");
  const coversScreen = () => PHONE.matches;

  function keepFocusInPanel(e) {
    const focusable = Array.from(ui.panel.querySelectorAll("button, input, textarea, a[href], [tabindex='0']")).filter(
      (el) => !el.disabled && el.getClientRects().length > 0
    );
    if (!focusable.length) return;
    const first = focusable[0];
    const last = focusable[focusable.length - 1];
    const active = ui.shadow.activeElement;
    if (e.shiftKey && (active === first || !ui.panel.contains(active))) {
      e.preventDefault();
      last.focus();
    } else if (!e.shiftKey && (active === last || !ui.panel.contains(active))) {
      e.preventDefault();
      first.focus();
    }
  }

  function scrollDown(force) {
    if (force) pinned = true;
    if (pinned) ui.log.scrollTop = ui.log.scrollHeight;
  }

  function updateSend() {
    ui.send.disabled = busy || cooldownUntil > 0 || unavailable || tooLong;
  }

  function setNotice(text, announce) {
    // the countdown rewrites the notice every second; only its first sentence is announced
    ui.notice.setAttribute("aria-live", announce ? "polite" : "off");
    ui.notice.textContent = text;
  }

  function setUnavailable() {
    unavailable = true;
    setNotice(TEXT.unavailable, true);
    ui.composer.hidden = ui.handoffBtn.hidden = ui.handoffForm.hidden = true;
    updateSend();
  }

  function startCooldown(seconds, reason) {
    cooldownUntil = Date.now() + Math.min(Math.max(seconds || 5, 1), 3600) * 1000;
    clearInterval(cooldownTimer);
    let first = true;
    const tick = () => {
      const left = Math.ceil((cooldownUntil - Date.now()) / 1000);
      if (left <= 0) {
        clearInterval(cooldownTimer);
        cooldownUntil = 0;
        setNotice("", false);
        checkLength();
        return;
      }
      setNotice(`${reason || "You're sending messages quickly."} You can write again in ${left} second${left === 1 ? "" : "s"}.`, first);
      first = false;
    };
    tick();
    cooldownTimer = setInterval(tick, 1000);
    updateSend();
  }

  // ---------------------------------------------------------------- messages
  function append(el) {
    ui.log.append(el);
    scrollDown();
    return el;
  }

  const addUser = (text) =>
    append(h("div", { class: "msg user", "data-role": "user" }, h("span", { class: "sr-only" }, "You said:"), h("div", { class: "bubble", dir: "auto", text })));

  const addSystem = (text) => append(h("div", { class: "msg system", "data-role": "system", text }));

  function addAssistant(text, testid) {
    const body = h("div", { class: "bubble md", dir: "auto" });
    const speaker = h("span", { class: "sr-only" }, site.name + " said:");
    const view = { el: h("div", { class: "msg assistant", "data-role": "assistant", "data-testid": testid }, speaker, body), body, text: text || "", frame: 0, sources: null };
    if (view.text) renderAnswer(view);
    append(view.el);
    return view;
  }

  function renderAnswer(view) {
    if (view.frame) cancelAnimationFrame(view.frame);
    view.frame = 0;
    view.body.replaceChildren();
    renderMarkdown(view.text, view.body);
  }

  function scheduleRender(view) {
    if (view.frame) return;
    view.frame = requestAnimationFrame(() => {
      view.frame = 0;
      renderAnswer(view);
      scrollDown();
    });
  }

  function showGreeting() {
    if (site.greeting) addAssistant(site.greeting, "greeting");
  }

  function showTicket(ticket, answer) {
    if (!ticket || typeof ticket !== "object" || shownTickets.has(ticket.ticket_id)) return;
    shownTickets.add(ticket.ticket_id);
    const message = str(ticket.message) || TEXT.handoff;
    // a "talk to a person" message is answered with this same sentence
    if (!answer || !answer.includes(message)) addSystem(message);
  }

  function renderSources(view, sources) {
    if (view.sources) view.sources.remove();
    view.sources = null;
    const list = Array.isArray(sources) ? sources.filter((s) => s && typeof s === "object") : [];
    if (!list.length) return;
    const ol = h("ol", { "aria-label": "Sources" });
    for (const s of list) {
      const title = str(s.title) || str(s.source) || str(s.url) || "Source";
      const href = str(s.url) ? httpUrl(s.url, API) : null;
      const snippet = str(s.snippet).slice(0, 300) || null;
      const a = href ? link(href, title) : h("span", {}, title);
      if (href) a.setAttribute("data-testid", "source-link");
      if (snippet) a.title = snippet;
      ol.append(h("li", {}, a));
    }
    view.sources = h("div", { class: "sources", "data-testid": "sources" }, h("div", { class: "sources-label", "aria-hidden": "true" }, "Sources"), ol);
    view.body.after(view.sources);
    scrollDown();
  }

  function sendFeedback(turnId, rating, comment) {
    if (!session) return Promise.reject(failure(404, "unknown_session"));
    const body = { session_id: session.session_id, turn_id: turnId, rating };
    if (comment) body.comment = comment;
    return callJson("POST", "/api/v1/feedback", body, auth());
  }

  function addFeedback(view, turnId, rating) {
    const button = (kind, label) =>
      h("button", { type: "button", "data-testid": "thumbs-" + kind, "aria-label": label, title: label, "aria-pressed": "false" }, icon(ICON[kind]));
    const up = button("up", "Helpful");
    const down = button("down", "Not helpful");
    let current = rating === "up" || rating === "down" ? rating : null;
    let comment = null;
    const paint = () => {
      up.setAttribute("aria-pressed", String(current === "up"));
      down.setAttribute("aria-pressed", String(current === "down"));
    };
    const choose = async (choice) => {
      if (current === choice) return;
      const before = current;
      current = choice;
      paint();
      if (comment) comment.remove();
      comment = choice === "down" ? addComment(view, turnId) : null;
      try {
        const res = await sendFeedback(turnId, choice);
        showTicket(res && res.handoff_ticket);
        // the comment box keeps the focus the customer may be typing in
        askForEmail(res && res.handoff_ticket, false);
      } catch (err) {
        if (current === choice) {
          current = before;
          paint();
          if (comment) comment.remove();
          comment = null;
        }
        showError(err);
      }
    };
    up.addEventListener("click", () => choose("up"));
    down.addEventListener("click", () => choose("down"));
    paint();
    view.el.append(h("div", { class: "feedback", role: "group", "aria-label": "Rate this answer" }, up, down));
  }

  function addComment(view, turnId) {
    const inputId = "scw-comment-" + ++uid;
    const input = h("input", { id: inputId, type: "text", maxlength: "2000", autocomplete: "off", "data-testid": "feedback-comment" });
    const send = h("button", { type: "submit", class: "small", "data-testid": "feedback-send" }, "Send");
    const form = h("form", { class: "comment", "data-testid": "feedback-form" }, h("label", { for: inputId }, "What was wrong? (optional)"), h("div", { class: "row" }, input, send));
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const text = input.value.trim();
      if (!text) return form.remove();
      send.disabled = true;
      try {
        const res = await sendFeedback(turnId, "down", text);
        form.replaceWith(h("p", { class: "thanks", role: "status" }, "Thanks for your feedback."));
        showTicket(res && res.handoff_ticket);
        askForEmail(res && res.handoff_ticket, false);
      } catch (err) {
        send.disabled = false;
        showError(err);
      }
    });
    view.el.append(form);
    input.focus();
    scrollDown();
    return form;
  }

  function renderHistory(data) {
    const messages = (data && Array.isArray(data.messages) ? data.messages : []).filter((m) => m && typeof m === "object");
    const ticket = data && data.handoff_ticket && typeof data.handoff_ticket === "object" ? data.handoff_ticket : null;
    // the hand-off's note goes where it happened: before the first question asked after it (a
    // ticket opened while an answer was written comes after that answer)
    const opened = ticket && typeof ticket.created_at === "number" ? ticket.created_at : Infinity;
    // a "talk to a person" message was answered with the note's own sentence (an earlier,
    // closed ticket's answer says it too, so only answers since this one opened count)
    const note = ticket ? str(ticket.message) || TEXT.handoff : "";
    const said = messages.some(
      (m) => m.role === "assistant" && !(typeof m.created_at === "number" && m.created_at < opened) && str(m.content).includes(note)
    );
    const placeTicket = () => {
      if (ticket && !said) showTicket(ticket);
    };
    let role = "";
    for (const m of messages) {
      if (m.role === "user" && typeof m.created_at === "number" && m.created_at > opened) placeTicket();
      role = m.role;
      if (m.role === "user") addUser(str(m.content));
      if (m.role !== "assistant") continue;
      const view = addAssistant(str(m.content));
      renderSources(view, m.sources);
      if (typeof m.id === "number") addFeedback(view, m.id, m.rating);
      if (m.interrupted === true) addSystem(TEXT.interrupted);
    }
    placeTicket();
    clearTimeout(catchUpTimer);
    if (data.answer_in_progress === true) {
      // an answer is still being written (for another tab, or for this page before a reload):
      // look again shortly, until it is stored
      catchUpTimer = setTimeout(followStored, CATCH_UP_MS);
    } else if (role === "user") addSystem(TEXT.unanswered); // the old page left before an answer began
  }

  function showError(err) {
    if (!err || err.name === "AbortError") return;
    const status = err.status || 0;
    if (status === 0) addSystem(TEXT.network);
    else if (status === 429)
      // new conversations are limited per network (an office, a phone carrier), not per visitor
      startCooldown(err.retryAfter, /conversations/.test(err.serverMessage) ? "Many conversations were started from your network just now." : "");
    else if (status === 403 && NOT_ALLOWED.includes(err.code)) setUnavailable();
    else if (sessionGone(err)) {
      forgetSession();
      addSystem(TEXT.ended);
    } else addSystem(status >= 400 && status < 500 && err.serverMessage ? err.serverMessage : TEXT.generic);
  }

  // ---------------------------------------------------------------- chatting
  async function sendMessage() {
    const text = ui.input.value.trim();
    if (!text || busy || cooldownUntil || unavailable || tooLong) return;
    if (ui.shadow.activeElement === ui.send) ui.input.focus(); // Send is about to be disabled
    busy = true;
    updateSend();
    ui.input.value = "";
    autosize();
    const userEl = addUser(text);
    scrollDown(true);
    const view = addAssistant();
    view.body.append(h("div", { class: "typing", role: "status", "aria-label": "Assistant is typing", "data-testid": "typing" }, h("span"), h("span"), h("span")));
    const controller = new AbortController();
    streaming = controller;
    const state = { started: false };
    ui.log.setAttribute("aria-busy", "true"); // read the answer once it is complete, not every frame
    try {
      await withSession(
        () => streamAnswer(text, view, controller.signal, state),
        () => userEl.before(h("div", { class: "msg system", "data-role": "system", text: TEXT.renewed }))
      );
    } catch (err) {
      if (controller.signal.aborted) return;
      if (!view.text) view.el.remove();
      if (!state.started) {
        // the server never took the message: give it back to edit or resend
        userEl.remove();
        if (!ui.input.value) {
          ui.input.value = text;
          autosize();
        }
      }
      showError(err);
    } finally {
      if (streaming === controller) {
        streaming = null;
        busy = false;
        ui.log.removeAttribute("aria-busy");
        updateSend();
        const stored = readStored();
        if (followLater || (session && (!stored || stored.session_id !== session.session_id))) followStored();
      }
    }
  }

  async function streamAnswer(text, view, signal, state) {
    const res = await call(
      "POST",
      "/api/v1/chat/stream",
      { session_id: session.session_id, message: text },
      Object.assign({ Accept: "text/event-stream" }, auth()),
      signal
    );
    state.started = true;
    touchSession();
    let done = null;
    let problem = null;
    await readEvents(res, (event, raw) => {
      let data;
      try {
        data = JSON.parse(raw);
      } catch (_) {
        return;
      }
      if (!data || typeof data !== "object") return;
      if (event === "token") {
        view.text += str(data.text);
        scheduleRender(view);
      } else if (event === "sources") {
        renderSources(view, data.sources);
      } else if (event === "error") {
        problem = data;
      } else if (event === "done") {
        done = data;
      }
    });
    if (done && str(done.answer)) view.text = done.answer;
    if (view.text) renderAnswer(view);
    else view.el.remove();
    // no done: the connection dropped mid-answer
    const note = problem ? str(problem.message) || TEXT.generic : !done ? TEXT.network : view.text ? "" : TEXT.generic;
    // a finished answer usually carries the error's sentence already
    if (note && !view.text.includes(note)) addSystem(note);
    if (done) {
      if (typeof done.turn_id === "number" && view.text) addFeedback(view, done.turn_id, null);
      showTicket(done.handoff_ticket, view.text);
      askForEmail(done.handoff_ticket);
      touchSession(); // other tabs of the site show the answer too
    }
    scrollDown();
  }

  function newConversation() {
    clearTimeout(catchUpTimer);
    if (streaming) streaming.abort();
    streaming = null;
    busy = false;
    ui.log.removeAttribute("aria-busy");
    forgetSession();
    shownTickets.clear();
    ui.log.replaceChildren();
    closeHandoff(false);
    showGreeting();
    updateSend();
    (unavailable ? ui.closeBtn : ui.input).focus();
  }

  /* Another tab of the site wrote to the stored conversation, or started a new one, or forgot
     it: this tab shows the stored conversation as the server has it (unless it is writing an
     answer, and then once it has), so that tabs never take turns overwriting each other's. */
  async function followStored() {
    if (!ui || !store) return; // without storage, each page keeps its own
    if (streaming) {
      followLater = true; // once this tab's answer is complete
      return;
    }
    followLater = false;
    const stored = readStored();
    if (!stored && !session) return;
    const same = !!stored && !!session && stored.session_id === session.session_id;
    session = stored;
    let data = null;
    if (stored) {
      try {
        data = await fetchHistory(stored);
      } catch (err) {
        if (session === stored && sessionGone(err)) forgetSession();
        else if (same) return; // a passing failure: keep showing what is shown
      }
    }
    if (streaming) {
      followLater = true; // this tab began an answer meanwhile: catch up once it is complete
      return;
    }
    if (session !== stored) return; // it changed again meanwhile
    shownTickets.clear();
    ui.log.replaceChildren();
    if (!same) closeHandoff(false);
    showGreeting();
    if (data) renderHistory(data);
    updateSend();
  }

  // ---------------------------------------------------------------- hand-off
  function openHandoff(forReply, focus = true) {
    // Before any question the team would not know what it is about: an address is needed.
    const first = !forReply && !ui.log.querySelector('[data-role="user"]');
    const [title, hint] = forReply
      ? [TEXT.replyTitle, TEXT.replyHint]
      : [TEXT.handoffTitle, first ? TEXT.firstHint : TEXT.handoffHint];
    const needed = Boolean(forReply) || first;
    ui.handoffForm.querySelector("strong").textContent = title;
    ui.handoffForm.querySelector(".hint").textContent = hint;
    ui.emailInput.required = needed;
    ui.emailInput.labels[0].querySelector("span").textContent = needed ? "Email" : "Email (optional)";
    ui.handoffForm.hidden = false;
    ui.handoffBtn.setAttribute("aria-expanded", "true");
    if (focus) (forReply ? ui.emailInput : ui.nameInput).focus();
  }

  /* A ticket that just opened without an email address: the form asks for one, once per
     ticket (the customer may close it; "Talk to a person" opens it again). */
  function askForEmail(ticket, focus = true) {
    if (!ticket || typeof ticket !== "object" || ticket.status !== "open" || ticket.has_email !== false) return;
    if (emailAsked.has(ticket.ticket_id)) return;
    emailAsked.add(ticket.ticket_id);
    openHandoff(true, focus);
    scrollDown(true);
  }

  function closeHandoff(refocus) {
    ui.handoffForm.hidden = true;
    ui.handoffBtn.setAttribute("aria-expanded", "false");
    if (refocus) ui.input.focus();
  }

  async function submitHandoff() {
    if (!ui.handoffForm.reportValidity()) return;
    const contact = {};
    const name = ui.nameInput.value.trim();
    const email = ui.emailInput.value.trim();
    if (name) contact.name = name;
    if (email) contact.email = email;
    ui.handoffSend.disabled = true;
    try {
      const res = await withSession(() => {
        const body = { session_id: session.session_id };
        if (name || email) body.contact = contact;
        return callJson("POST", "/api/v1/handoff", body, auth());
      });
      closeHandoff(true);
      ui.nameInput.value = ui.emailInput.value = "";
      if (res && res.ticket_id !== undefined) shownTickets.add(res.ticket_id);
      addSystem(str(res && res.message) || TEXT.handoff);
      scrollDown(true);
    } catch (err) {
      if (err.status === 422 && email) {
        // the server's address check is stricter than the browser's
        ui.emailInput.setCustomValidity("Please check this email address.");
        ui.emailInput.reportValidity();
      } else showError(err);
    } finally {
      ui.handoffSend.disabled = false;
    }
  }

  // ---------------------------------------------------------------- start
  const bodyReady = () =>
    document.body ? Promise.resolve() : new Promise((resolve) => document.addEventListener("DOMContentLoaded", resolve, { once: true }));
  const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  /* Whether the API's server answers at all. A page whose origin the site does not allow fails
     like a network error (CORS), but an opaque no-cors request still reaches the server. */
  async function serverAnswers() {
    try {
      await fetch(API + "/healthz", { mode: "no-cors", cache: "no-store", credentials: "omit" });
      return true;
    } catch (_) {
      return false;
    }
  }

  /* The site's settings; while the server cannot be reached (a restart, a dropped connection),
     asked again after 3 s, then less and less often, so that the chat appears once it is back. */
  async function loadSiteWhenUp() {
    for (let wait = 3000; ; wait = Math.min(wait * 2, 60000)) {
      try {
        return await loadSite();
      } catch (err) {
        if (err.status !== 0 || (await serverAnswers())) throw err;
      }
      await pause(wait);
    }
  }

  const fetchHistory = (stored) =>
    callJson("GET", "/api/v1/sessions/" + encodeURIComponent(stored.session_id), undefined, auth(stored));

  async function start() {
    let stored = readStored();
    if (stored && idle(stored)) {
      forgetSession();
      stored = null;
    }
    let [siteResult, historyResult] = await Promise.allSettled([loadSiteWhenUp(), stored ? fetchHistory(stored) : null]);
    if (siteResult.status === "rejected") {
      // An unknown key or a page the site does not allow (which the browser reports as a
      // network error when CORS refuses it): no chat at all rather than one that cannot work.
      console.warn("Support chat: not available on this page (site key " + SITE_KEY + ", API " + API + ").");
      return;
    }
    if (stored && historyResult.status === "rejected" && historyResult.reason.status === 0) {
      [historyResult] = await Promise.allSettled([fetchHistory(stored)]); // the server is back now
    }
    if (stored) {
      if (historyResult.status === "fulfilled") session = stored;
      else if (sessionGone(historyResult.reason)) forgetSession();
      else session = stored; // a passing failure: the server still has the conversation
    }
    await bodyReady();
    build();
    showGreeting();
    if (historyResult.status === "fulfilled" && historyResult.value) renderHistory(historyResult.value);
    updateSend();
    if (wantOpen) setOpen(true);
    else if (wantOpen === null && session && wasOpen() && !PHONE.matches) setOpen(true, false, true);
    window.addEventListener("storage", (e) => {
      if (e.key === STORE_KEY || e.key === null) followStored();
    });
  }

  window.SupportChatWidget = Object.freeze({
    open: () => setOpen(true),
    close: () => setOpen(false),
  });
  start().catch((err) => console.warn("Support chat failed to start:", err));
})();
