// Every staff page: a confirm before an action that cannot be undone (form[data-confirm]).
"use strict";

document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form.matches("form[data-confirm]") && !window.confirm(form.dataset.confirm)) {
    event.preventDefault();
    event.stopImmediatePropagation();
  }
});
