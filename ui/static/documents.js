// The documents page: uploads with a progress bar and per-file results (staff.js asks before
// deleting).
// XMLHttpRequest rather than fetch: only it reports upload progress. Data from the server is
// shown with textContent only; refreshed parts of the page are the server's own escaped HTML.
"use strict";

(function () {
  function formatBytes(n) {
    if (n < 1000) return n + " bytes";
    if (n < 1e6) return (n / 1e3).toFixed(1) + " KB";
    return (n / 1e6).toFixed(1) + " MB";
  }

  function showResults(results) {
    const list = document.getElementById("upload-results");
    list.replaceChildren();
    for (const r of results) {
      const item = document.createElement("li");
      item.dataset.status = r.status;
      const name = document.createElement("strong");
      name.textContent = r.file;
      const chip = document.createElement("span");
      chip.className = "chip";
      chip.textContent = r.status;
      item.append(name, " ", chip);
      if (r.reason) item.append(" " + r.reason);
      list.append(item);
    }
  }

  // The sign-in ended while the page was open: a link to sign in again, back to this page.
  function showSignIn() {
    const item = document.createElement("li");
    item.className = "error";
    item.setAttribute("role", "alert");
    const link = document.createElement("a");
    link.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
    link.textContent = "Sign in again";
    link.dataset.testid = "sign-in-again";
    item.append("Your sign-in has ended. ", link, " to go on uploading.");
    document.getElementById("upload-results").append(item);
  }

  function showError(message) {
    const list = document.getElementById("upload-results");
    const item = document.createElement("li");
    item.className = "error";
    item.setAttribute("role", "alert");
    item.textContent = message;
    list.replaceChildren(item);
  }

  // Swap parts of the page (ids separated by spaces) for fresh copies, parsed inertly.
  async function refresh(selectors) {
    // The same page, on the same collection (?collection=), without a one-off notice.
    const query = new URLSearchParams(location.search);
    query.delete("done");
    const search = query.toString();
    const url = location.pathname + (search ? "?" + search : "");
    const response = await fetch(url, { headers: { Accept: "text/html" } });
    if (!response.ok) return;
    const page = new DOMParser().parseFromString(await response.text(), "text/html");
    for (const selector of selectors.split(" ")) {
      const fresh = page.querySelector(selector);
      const current = document.querySelector(selector);
      if (fresh && current) current.replaceWith(document.importNode(fresh, true));
    }
  }

  // An id for one request, so that its indexing can be followed (crypto.randomUUID needs a
  // secure context; getRandomValues does not).
  function newUploadId() {
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  // What the server says of a file being indexed, as the label's text.
  function indexingText(name, state) {
    if (state.stage === "embedding" && state.total > 0) {
      return "Indexing " + name + ": " + state.done.toLocaleString("en") + " of " +
        state.total.toLocaleString("en") + " passages";
    }
    if (state.stage === "reading") return "Indexing " + name + ": reading the file…";
    if (state.stage === "saving") return "Indexing " + name + ": saving…";
    return "Indexing " + name + "…";
  }

  // Asks how the upload ``id`` is getting on a second after each answer (so that answers come
  // in order), until the returned stop() is called.
  function follow(form, id, onState) {
    let stopped = false;
    let timer = null;
    const ask = async () => {
      try {
        const response = await fetch(form.dataset.progress + id, {
          headers: { Accept: "application/json" },
        });
        const state = response.ok ? await response.json() : null;
        if (state && !stopped) onState(state);
      } catch (err) {
        // the next question, or the upload's own answer, tells
      }
      if (!stopped) timer = setTimeout(ask, 1000);
    };
    timer = setTimeout(ask, 1000);
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
  }

  // One request: resolves with the HTTP status and the JSON body (status 0: connection lost).
  function send(form, file, name, uploadId, onProgress, onSent) {
    return new Promise((resolve) => {
      const data = new FormData();
      data.append(form.dataset.field, file, name);
      const xhr = new XMLHttpRequest();
      xhr.open(form.dataset.method, form.dataset.api);
      xhr.responseType = "json";
      xhr.setRequestHeader("Accept", "application/json");
      if (form.dataset.progress) xhr.setRequestHeader("X-Upload-Id", uploadId);
      xhr.upload.onprogress = (event) => {
        if (event.lengthComputable) onProgress(event.loaded, event.total);
      };
      xhr.upload.onload = onSent;
      xhr.onload = () => resolve({ status: xhr.status, body: xhr.response || {} });
      xhr.onerror = () => resolve({ status: 0, body: {} });
      xhr.send(data);
    });
  }

  // What one file's request says about it, as result rows.
  function resultsOf(name, reply) {
    const body = reply.body;
    if (Array.isArray(body.results)) return body.results;
    if (body.file) return [body];
    const reason =
      reply.status === 0
        ? "the connection was lost; please try again"
        : reply.status === 401
          ? "your sign-in has ended; sign in again (link below), then upload the file again"
          : (body.error && body.error.message) || "the upload failed (" + reply.status + ")";
    return [{ file: name, status: "failed", reason: reason }];
  }

  // The files chosen, each with the name it is sent under: a file chosen on its own goes by
  // its name, a folder's file by its path inside the folder ("billing/faq.md"), the name
  // `chatbot ingest` gives it. Of a folder, hidden files are passed over, and files of other
  // types and snippet folders' files are reported as skipped, as the command line does.
  function chosen(form, results) {
    const picked = [];
    const names = new Set();
    for (const input of form.querySelectorAll("input[type=file]")) {
      const types = (input.accept || "").toLowerCase().split(",").filter(Boolean);
      // Snippet folders (the server names them): chatbot ingest reads their files through the
      // articles that include them.
      const snippets = (input.dataset.snippetFolders || "").split(",").filter(Boolean);
      for (const file of Array.from(input.files)) {
        if (!("folder" in input.dataset)) {
          pick(file, file.name);
          continue;
        }
        const parts = (file.webkitRelativePath || file.name).split("/").slice(1);
        if (!parts.length) parts.push(file.name);
        if (parts.some((part) => part.startsWith("."))) continue;
        const name = parts.join("/");
        const last = parts[parts.length - 1];
        const dot = last.lastIndexOf(".");
        const suffix = dot > 0 ? last.slice(dot).toLowerCase() : "";
        if (parts.slice(0, -1).some((part) => snippets.includes(part))) {
          results.push({ file: name, status: "skipped", reason: "a snippet: an upload does not fill snippets into articles; use chatbot ingest for a folder with snippets" });
        } else if (types.length && !types.includes(suffix)) {
          results.push({ file: name, status: "skipped", reason: "not a Markdown, text, HTML, PDF or Word file" });
        } else {
          pick(file, name);
        }
      }
    }
    return picked;

    // The same name twice (a file chosen on its own and in the folder): the first is sent.
    function pick(file, name) {
      if (names.has(name)) {
        results.push({ file: name, status: "failed", reason: "another file in this upload has the same name" });
      } else {
        names.add(name);
        picked.push({ file: file, name: name });
      }
    }
  }

  // Files go one per request, in turn: each is reported and listed as soon as it is indexed,
  // the label says which one is being indexed, and a change made meanwhile (a delete in another
  // tab) waits for one file, not for the whole batch.
  async function upload(form) {
    const results = [];
    const picked = chosen(form, results);
    if (!picked.length && !results.length) {
      showError("The folder holds no files to upload (hidden files are passed over).");
      clear(form);
      return;
    }
    // A file over the limit is reported here by name and not sent: the server would refuse it.
    const limit = Number(form.dataset.maxBytes) || Infinity;
    // The files past the upload's limit are refused here, as the server refuses them in one
    // request (each is sent on its own, so the server cannot count them).
    const most = Number(form.dataset.maxFiles) || Infinity;
    const sending = [];
    for (const [n, { file, name }] of picked.entries()) {
      if (n >= most) {
        results.push({ file: name, status: "failed", reason: "over the limit of " + most + " files per upload" });
      } else if (file.size > limit) {
        const reason =
          "the file is " + file.size.toLocaleString("en") + " bytes, over the limit of " +
          limit.toLocaleString("en");
        results.push({ file: name, status: "failed", reason: reason });
      } else {
        sending.push({ file: file, name: name });
      }
    }
    showResults(results);
    if (!sending.length) {
      clear(form);
      return;
    }
    const progress = document.getElementById("upload-progress");
    const bar = progress.querySelector("progress");
    const label = progress.querySelector("span");
    const button = form.querySelector("button[type=submit]");
    const total = sending.reduce((sum, item) => sum + item.file.size, 0) || 1;
    let done = 0;
    bar.max = total;
    bar.value = 0;
    progress.hidden = false;
    button.disabled = true;
    // Each file's share of the bar: the first half fills as it is sent, the second as its
    // passages are embedded (the server says how far), so a large file's bar is not full while
    // it is still being indexed.
    const sentShare = form.dataset.progress ? 0.5 : 0.9;
    try {
      for (let i = 0; i < sending.length; i++) {
        const { file, name } = sending[i];
        const which = sending.length > 1 ? " (" + (i + 1) + " of " + sending.length + ")" : "";
        label.textContent = "Uploading " + name + which + "…";
        const uploadId = newUploadId();
        let stopFollowing = () => {};
        const reply = await send(
          form,
          file,
          name,
          uploadId,
          (loaded) => {
            bar.value = done + sentShare * Math.min(loaded, file.size);
            label.textContent =
              "Uploading " + name + which + ": " + formatBytes(Math.min(loaded, file.size)) +
              " of " + formatBytes(file.size);
          },
          () => {
            bar.value = done + sentShare * file.size;
            label.textContent = "Indexing " + name + which + "…";
            if (form.dataset.progress) {
              stopFollowing = follow(form, uploadId, (state) => {
                const indexed =
                  state.stage === "saving" || state.stage === "done" ? 1
                    : state.stage === "embedding" && state.total > 0 ? state.done / state.total
                      : 0;
                bar.value = done + file.size * (sentShare + (1 - sentShare) * indexed);
                label.textContent = indexingText(name + which, state);
              });
            }
          }
        );
        stopFollowing();
        done += file.size;
        bar.value = done;
        const these = resultsOf(name, reply);
        results.push(...these);
        const stop = reply.status === 0 || reply.status === 401 || reply.status === 403;
        if (stop) {
          // The connection is lost, or signed out (or no longer allowed): the files left would
          // fail the same way. What was indexed before stays listed.
          const reason = "not sent: " + these[0].reason;
          for (const rest of sending.slice(i + 1)) results.push({ file: rest.name, status: "failed", reason: reason });
        }
        showResults(results);
        if (reply.status === 401) showSignIn();
        if (stop) break;
        try {
          await refresh(form.dataset.refresh);
        } catch (err) {
          // the list catches up on the next file, or on a reload
        }
      }
    } finally {
      button.disabled = false;
      progress.hidden = true;
      clear(form);
    }
  }

  // The form emptied for the next upload, its file picker required again.
  function clear(form) {
    form.reset();
    const files = form.querySelector("input[type=file]:not([data-folder])");
    if (files && form.querySelector("input[data-folder]")) files.required = true;
  }

  // The folder picker needs this script (it sends each file under its path in the folder).
  for (const picker of document.querySelectorAll("[data-folder-picker]")) picker.hidden = false;

  // A folder chosen is enough to upload: the file picker is then not required.
  document.addEventListener("change", (event) => {
    const input = event.target;
    if (!input.matches("form[data-upload] input[data-folder]")) return;
    const files = input.form.querySelector("input[type=file]:not([data-folder])");
    if (files) files.required = !input.files.length;
  });

  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (form.matches("form[data-upload]")) {
      event.preventDefault();
      upload(form).catch(() => showError("The upload failed. Please try again."));
    }
  });
})();
