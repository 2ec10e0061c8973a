// The page's script: plain JavaScript, no build step, no network beyond this service.
// It gathers the forms into JSON, posts them to /ui/..., and shows the HTML the service renders.
"use strict";
(function () {
  const $ = (sel) => document.querySelector(sel);
  const tokenNeeded = document.body.dataset.tokenNeeded === "true";
  if (tokenNeeded) $("#token-row").hidden = false;

  async function post(path, body, target) {
    const headers = {"Content-Type": "application/json"};
    const token = $("#token").value.trim();
    if (token) headers["Authorization"] = "Bearer " + token;
    target.setAttribute("aria-busy", "true");
    try {
      const res = await fetch(path, {method: "POST", headers, body: JSON.stringify(body)});
      const type = res.headers.get("content-type") || "";
      if (type.startsWith("text/html")) {
        target.innerHTML = await res.text();
      } else {
        const data = await res.json();
        target.innerHTML = "";
        const p = document.createElement("p");
        p.className = "error"; p.setAttribute("role", "alert");
        p.textContent = "Error " + res.status + ": " + (data.error || JSON.stringify(data));
        target.appendChild(p);
      }
    } catch (err) {
      target.textContent = "The service could not be reached: " + err;
    } finally {
      target.removeAttribute("aria-busy");
    }
  }

  // --- service rows ---
  const tbody = $("#services tbody");
  function addRow(focus) {
    const row = $("#service-row").content.firstElementChild.cloneNode(true);
    row.querySelector(".remove").addEventListener("click", () => {
      const next = row.nextElementSibling || row.previousElementSibling;
      row.remove();
      if (next) next.querySelector("input").focus(); else $("#add-row").focus();
    });
    tbody.appendChild(row);
    if (focus) row.querySelector("input").focus();
    return row;
  }
  $("#add-row").addEventListener("click", () => addRow(true));
  addRow(false);

  for (const radio of document.querySelectorAll('input[name="mode"]')) {
    radio.addEventListener("change", () => {
      const text = $('input[name="mode"]:checked').value === "text";
      $("#text-mode").hidden = !text;
      $("#fields-mode").hidden = text;
    });
  }

  function sessionPart() {
    if ($('input[name="mode"]:checked').value === "text") return {text: $("#session-text").value};
    const session = {};
    const id = $("#session_id").value.trim();
    if (id) session.session_id = id;
    if ($("#date_of_service").value) session.date_of_service = $("#date_of_service").value;
    if ($("#discipline").value) session.discipline = $("#discipline").value;
    session.services = [];
    for (const row of tbody.rows) {
      const get = (name) => row.querySelector(`[name="${name}"]`).value.trim();
      const service = {code: get("code"), minutes: get("minutes") === "" ? null : Number(get("minutes"))};
      if (get("provider")) service.provider = get("provider");
      if (get("modifiers")) service.modifiers = get("modifiers").split(/[\s,]+/).filter(Boolean);
      if (get("group_size")) service.group_size = Number(get("group_size"));
      session.services.push(service);
    }
    return {session};
  }
  function payers() {
    return Array.from(document.querySelectorAll('input[name="payers"]:checked')).map((box) => box.value);
  }

  let last = null;   // what the results on show were billed from, for their Explain buttons
  $("#session-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    last = sessionPart();
    $("#explanation").innerHTML = "";
    const chosen = payers();
    if (last.session) last.session.payer = chosen[0];
    await post("/ui/check", Object.assign({payers: chosen}, last), $("#results"));
  });
  $("#results").addEventListener("click", async (event) => {
    const button = event.target.closest("button.explain");
    if (!button || !last) return;
    await post("/ui/explain", Object.assign({payer: button.dataset.payer}, last), $("#explanation"));
    const heading = $("#explanation h3");
    if (heading) { heading.tabIndex = -1; heading.focus(); }
  });

  // --- batch ---
  $("#batch-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const file = $("#batch-file").files[0];
    if (!file) return;
    await post("/ui/batch", {name: file.name, text: await file.text()}, $("#batch-result"));
  });

  // --- validate ---
  $("#validate-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    await post("/ui/validate", {text: $("#payer-yaml").value}, $("#validate-result"));
  });
})();
