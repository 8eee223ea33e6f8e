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

  function upload(form) {
    const input = form.querySelector("input[type=file]");
    if (!input.files.length) return;
    // A file over the limit is reported here by name and not sent: the server would drop it,
    // and a request too large as a whole would be refused with the good files in it.
    const limit = Number(form.dataset.maxBytes) || Infinity;
    const refused = [];
    const data = new FormData();
    for (const file of input.files) {
      if (file.size > limit) {
        const reason =
          "the file is " + file.size.toLocaleString("en") + " bytes, over the limit of " +
          limit.toLocaleString("en");
        refused.push({ file: file.name, status: "failed", reason: reason });
      } else {
        data.append(form.dataset.field, file);
      }
    }
    if (refused.length === input.files.length) {
      showResults(refused);
      form.reset();
      return;
    }
    const progress = document.getElementById("upload-progress");
    const bar = progress.querySelector("progress");
    const label = progress.querySelector("span");
    const button = form.querySelector("button[type=submit]");
    bar.value = 0;
    label.textContent = "Uploading…";
    progress.hidden = false;
    button.disabled = true;
    document.getElementById("upload-results").replaceChildren();

    const xhr = new XMLHttpRequest();
    xhr.open(form.dataset.method, form.dataset.api);
    xhr.responseType = "json";
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.onprogress = (event) => {
      if (!event.lengthComputable) return;
      bar.max = event.total;
      bar.value = event.loaded;
      label.textContent = formatBytes(event.loaded) + " of " + formatBytes(event.total);
    };
    xhr.upload.onload = () => {
      label.textContent = "Indexing…";
    };
    xhr.onload = async () => {
      button.disabled = false;
      progress.hidden = true;
      const body = xhr.response || {};
      if (body.results) showResults(refused.concat(body.results));
      else if (body.file) showResults(refused.concat([body]));
      else showError((body.error && body.error.message) || "The upload failed (" + xhr.status + ").");
      form.reset();
      await refresh(form.dataset.refresh);
    };
    xhr.onerror = () => {
      button.disabled = false;
      progress.hidden = true;
      showError("The upload failed: the connection was lost. Please try again.");
    };
    xhr.send(data);
  }

  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (form.matches("form[data-upload]")) {
      event.preventDefault();
      upload(form);
    }
  });
})();
