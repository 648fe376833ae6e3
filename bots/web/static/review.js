// Keyboard shortcuts for the Review page: a approve, r reject, e edit, s skip, j/k next/previous.
// Each decision is the card's own form button, so htmx sends one request and swaps the card.
(function () {
  "use strict";
  let current = 0;
  const cards = () => Array.from(document.querySelectorAll("article.card"));

  function focus(index) {
    const all = cards();
    if (!all.length) return;
    current = Math.max(0, Math.min(index, all.length - 1));
    all.forEach((card, i) => card.classList.toggle("current", i === current));
    all[current].scrollIntoView({ block: "nearest" });
  }

  function press(card, action) {
    const button = card && card.querySelector(`button[value="${action}"]`);
    if (button) button.click();
  }

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey && event.key === "Enter" && event.target.matches("textarea")) {
      event.preventDefault();
      press(event.target.closest("article.card"), "approve");
      return;
    }
    if (event.target.matches("textarea, input, select")) {
      if (event.key === "Escape") event.target.blur();
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const card = cards()[current];
    switch (event.key) {
      case "j": case "s": focus(current + 1); break;
      case "k": focus(current - 1); break;
      case "a": press(card, "approve"); break;
      case "r": press(card, "reject"); break;
      case "e": {
        const text = card && card.querySelector("textarea");
        if (text) { event.preventDefault(); text.focus(); }
        break;
      }
      default: return;
    }
  });

  // After a decision the card comes back decided (htmx:load fires on the new card): go on.
  document.addEventListener("htmx:load", (event) => {
    const index = cards().indexOf(event.target);
    if (index >= 0) focus(index + 1);
  });
  document.addEventListener("DOMContentLoaded", () => focus(0));
})();
