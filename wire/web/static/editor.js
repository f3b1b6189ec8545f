// The editor console: publish an item through POST /v1/items and list recent ones.
//
// The API is the only validator (the form is novalidate): its error JSON names
// the field, and the message is shown next to that field. Each submission
// carries an Idempotency-Key; retrying the same content after a lost answer
// reuses the key, so a flaky network can never publish an item twice.
// Item text is put into the page with textContent only.
"use strict";

(() => {
  const TOKEN_KEY = "wire.editorToken";
  const RECENT = 20;
  const FIELDS = [
    "title", "subtitle", "tags", "mark", "urgency", "url", "token",
    "byline", "located", "language", "summary", "picture", "caption", "credit", "alt",
    "correction", "advisory",
  ];
  const TEXTS = ["byline", "located", "language", "summary"]; // sent as they are
  const PICTURE = ["caption", "credit", "alt"]; // the picture's own fields

  const form = document.getElementById("publish");
  const submit = document.getElementById("submit");
  const status = document.getElementById("form-status");
  const recent = document.getElementById("recent");
  const recentStatus = document.getElementById("recent-status");
  const updating = document.getElementById("updating");
  const updatingGuid = document.getElementById("updating-guid");
  const field = (name) => document.getElementById(name);

  let guid = null; // set when publishing a new version of an existing story
  let pending = null; // {body, key} of a submission whose outcome is unknown
  const listed = new Set(); // ids in the recent list

  // ---- token ---------------------------------------------------------------

  function storedToken() {
    try {
      return localStorage.getItem(TOKEN_KEY) || "";
    } catch {
      return ""; // storage disabled: the token lives in the field only
    }
  }

  function storeToken(token) {
    try {
      localStorage.setItem(TOKEN_KEY, token);
    } catch {
      /* storage disabled */
    }
  }

  field("token").value = storedToken();
  field("token").addEventListener("change", () => storeToken(field("token").value.trim()));

  // ---- messages ------------------------------------------------------------

  function clearErrors() {
    for (const name of FIELDS) {
      const error = field(name + "-error");
      error.hidden = true;
      error.textContent = "";
      field(name).removeAttribute("aria-invalid");
    }
    status.hidden = true;
    status.className = "form-status";
  }

  function fieldError(name, message) {
    const error = field(name + "-error");
    error.textContent = message;
    error.hidden = false;
    field(name).setAttribute("aria-invalid", "true");
    field(name).focus();
  }

  function formStatus(kind, message) {
    status.className = "form-status " + kind;
    status.textContent = message;
    status.hidden = false;
  }

  /** The form field an API error names: "associations[0].uri" is the picture URL. */
  function formField(apiField) {
    if (typeof apiField !== "string") return apiField;
    const assoc = /^associations(?:\[\d+\])?(?:\.(\w+))?/.exec(apiField);
    if (assoc) return PICTURE.includes(assoc[1]) ? assoc[1] : "picture";
    if (apiField === "type") return "advisory";
    return apiField;
  }

  /** Show an API error next to its field, or as a general message. */
  function showError(error, httpStatus) {
    const message = String((error && error.message) || "The server refused the item (" + httpStatus + ").");
    let name = formField(error && error.field);
    if (!name && httpStatus === 401) name = "token";
    if (name && FIELDS.includes(name)) fieldError(name, message);
    else formStatus("error", message);
  }

  // ---- publishing ----------------------------------------------------------

  function newKey() {
    // getRandomValues works on plain http too (randomUUID needs a secure context).
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function itemBody() {
    const body = {
      title: field("title").value,
      tags: field("tags").value.split(",").map((t) => t.trim()).filter(Boolean),
      urgency: Number(field("urgency").value),
    };
    for (const name of ["subtitle", "mark", "url", ...TEXTS]) {
      const value = field(name).value.trim();
      if (value) body[name] = value;
    }
    const picture = field("picture").value.trim();
    if (picture) {
      const assoc = { type: "picture", uri: picture };
      for (const name of PICTURE) {
        const value = field(name).value.trim();
        if (value) assoc[name] = value;
      }
      assoc.renditions = [{ name: "original", href: picture }];
      body.associations = [assoc];
    }
    if (field("correction").checked) body.correction = true;
    if (field("advisory").checked) body.type = "advisory";
    if (guid) body.guid = guid;
    return JSON.stringify(body);
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (submit.disabled) return; // one submission at a time
    clearErrors();
    const token = field("token").value.trim();
    if (!token) {
      fieldError("token", "Enter your editor token to publish.");
      return;
    }
    storeToken(token);
    const body = itemBody();
    if (!pending || pending.body !== body) pending = { body, key: newKey() };
    submit.disabled = true;
    submit.textContent = "Publishing…";
    try {
      const response = await fetch("/v1/items", {
        method: "POST",
        headers: {
          "Content-Type": "application/json",
          Authorization: "Bearer " + token,
          "Idempotency-Key": pending.key,
        },
        body,
      });
      const data = await response.json().catch(() => null);
      if (response.ok && data && data.item) {
        pending = null;
        published(data.item, response.status === 201);
      } else {
        if (response.status < 500) pending = null; // refused: nothing was published
        showError(data && data.error, response.status);
      }
    } catch {
      formStatus(
        "error",
        "The server could not be reached, so the item may not be published. " +
          "Submit again to retry: it will not be published twice."
      );
    } finally {
      submit.disabled = false;
      submit.textContent = "Publish";
    }
  });

  function published(item, created) {
    const what = item.version > 1 ? "Published version " + item.version : "Published";
    formStatus("ok", (created ? what : "Already published") + " · " + item.id);
    // Tags usually carry over to the next item; urgency must be chosen again.
    for (const name of ["title", "subtitle", "mark", "url", "summary", "picture", ...PICTURE]) {
      field(name).value = "";
    }
    field("correction").checked = false;
    field("advisory").checked = false;
    field("urgency").value = "5";
    setGuid(null);
    addRecent(item, true);
    field("title").focus();
  }

  function setGuid(value) {
    guid = value;
    updating.hidden = !guid;
    updatingGuid.textContent = guid || "";
  }

  document.getElementById("updating-cancel").addEventListener("click", () => setGuid(null));

  /** Load a story into the form to publish its next version (same guid). */
  function edit(item) {
    clearErrors();
    field("title").value = item.title || "";
    field("subtitle").value = item.subtitle || "";
    field("tags").value = (item.tags || []).join(", ");
    field("mark").value = "";
    field("url").value = item.url || "";
    field("urgency").value = String(item.urgency || 5);
    for (const name of TEXTS) field(name).value = item[name] || "";
    const pic = (item.associations || []).find((a) => a && a.type === "picture");
    field("picture").value = (pic && pic.uri) || "";
    for (const name of PICTURE) field(name).value = (pic && pic[name]) || "";
    field("correction").checked = false;
    field("advisory").checked = item.type === "advisory";
    setGuid(item.guid);
    field("title").focus();
  }

  // ---- recent items --------------------------------------------------------

  const pad = (n) => String(n).padStart(2, "0");
  const dateFormat = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short" });

  function when(iso) {
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return "";
    const time = pad(d.getHours()) + ":" + pad(d.getMinutes());
    return d.toDateString() === new Date().toDateString() ? time : dateFormat.format(d) + " " + time;
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function recentRow(item) {
    const li = el("li", "recent-item");
    li.dataset.id = item.id;
    const time = el("time", "time", when(item.published_at));
    time.dateTime = String(item.published_at || "");
    const main = el("div", "main");
    const head = el("div", "headline");
    if (item.pubstatus === "canceled") {
      head.append(el("span", "flag killed", "Withdrawn"));
      head.append(el("span", "title", item.reason ? String(item.reason) : "Story withdrawn"));
    } else {
      const urgency = Number(item.urgency);
      if (urgency === 1) head.append(el("span", "flag flash", "Flash"));
      else if (urgency === 2) head.append(el("span", "flag urgent", "Urgent"));
      if (item.mark) head.append(el("span", "mark", String(item.mark)));
      head.append(el("span", "title", String(item.title ?? "")));
    }
    main.append(head);
    const meta = el("p", "meta");
    meta.append(el("span", "meta-tags", (item.tags || []).join(", ")));
    if (item.version > 1) meta.append(el("span", "meta-version", "v" + item.version));
    meta.append(el("span", "meta-id", String(item.id)));
    main.append(meta);
    li.append(time, main);
    if (item.pubstatus !== "canceled" && item.guid) {
      const again = el("button", "quiet small", "New version");
      again.type = "button";
      again.title = "Publish an update of this story (same guid)";
      again.addEventListener("click", () => edit(item));
      li.append(again);
    }
    return li;
  }

  function addRecent(item, fresh) {
    if (!item || typeof item.id !== "string" || listed.has(item.id)) return;
    listed.add(item.id);
    const row = recentRow(item);
    if (fresh) {
      row.classList.add("fresh");
      recent.prepend(row);
    } else {
      recent.append(row);
    }
    while (recent.children.length > RECENT * 2) {
      listed.delete(recent.lastElementChild.dataset.id);
      recent.lastElementChild.remove();
    }
    recentStatus.textContent = "";
  }

  async function loadRecent() {
    recentStatus.textContent = "Loading…";
    const token = field("token").value.trim();
    // Reads are public unless the server requires tokens; an editor token also reads.
    const headers = token ? { Authorization: "Bearer " + token } : {};
    try {
      const response = await fetch("/v1/items?limit=" + RECENT, { headers });
      const data = await response.json().catch(() => null);
      if (!response.ok || !data || !Array.isArray(data.items)) {
        const message = data && data.error ? data.error.message : "HTTP " + response.status;
        recentStatus.textContent = "Could not load recent items: " + message;
        return;
      }
      recent.replaceChildren();
      listed.clear();
      for (const item of data.items) addRecent(item, false); // newest first already
      recentStatus.textContent = data.items.length ? "" : "Nothing published yet.";
    } catch {
      recentStatus.textContent = "Could not load recent items: the server is unreachable.";
    }
  }

  document.getElementById("recent-refresh").addEventListener("click", loadRecent);
  loadRecent();
})();
