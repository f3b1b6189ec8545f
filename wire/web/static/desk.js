// The live news desk: history backfill, then live items over /v1/ws.
//
// Rules this file keeps:
// - One row per story (guid). A newer version replaces the shown row (it is
//   never shown twice); a withdrawal removes the story's text and shows the
//   reason instead.
// - Every item id is handled at most once (the `seen` Set), and a reconnect
//   resumes with `since` = the greatest id handled, so nothing is missed and
//   nothing is duplicated across gateway restarts or network loss.
// - Text from items goes into the DOM through textContent only, never
//   innerHTML: a headline containing markup shows as that markup.
// - A language filter (BCP 47 tags, exact match, case aside) combines with the
//   tag filter: both must match. Both live in the URL (?tags=world&lang=en,ru).
// - Clicking a row opens the story (GET /v1/stories/<guid>): summary, body,
//   pictures, translations and versions, all as text.
// - On a wire that requires tokens, a refused stream asks for a token once
//   (a form in the page, not a retry loop); it is kept in sessionStorage and
//   sent as ?token= (a browser WebSocket cannot send an Authorization header).
"use strict";

(() => {
  const BACKFILL = 100; // history shown on load and after a filter change
  const MAX_ROWS = 500; // oldest rows are dropped past this, to keep the page light
  const RETRY_MIN_MS = 500;
  const RETRY_MAX_MS = 15000;
  const PING_EVERY_MS = 25000; // app-level ping: browsers hide WebSocket pings from scripts
  const PONG_WAIT_MS = 10000;
  const FRESH_AFTER_MS = 400; // backfill arrives right after "subscribed"; later rows are news

  const feed = document.getElementById("feed");
  const statusEl = document.getElementById("status");
  const statusText = document.getElementById("status-text");
  const form = document.getElementById("filter-form");
  const input = document.getElementById("filter");
  const langInput = document.getElementById("lang");
  const storyPanel = document.getElementById("story");
  const AGENCY = "WIRE";
  const PAGE_LANG = document.documentElement.lang || "en";
  const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
  const filterError = document.getElementById("filter-error");
  const notice = document.getElementById("notice");
  const empty = document.getElementById("empty");
  const count = document.getElementById("count");
  const tokenForm = document.getElementById("token-form");
  const tokenInput = document.getElementById("token");
  const tokenError = document.getElementById("token-error");
  const TOKEN_KEY = "wire-desk-token";

  const dayFormat = new Intl.DateTimeFormat(undefined, {
    day: "numeric",
    month: "long",
    year: "numeric",
  });
  const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "long" });

  // ---- state ---------------------------------------------------------------

  let filter = tagsFromLocation(); // [] means every tag
  let langs = langsFromLocation(); // [] means every language
  let stories = new Map(); // guid -> {id, el}
  let seen = new Set(); // ids already handled (items, versions, withdrawals)
  let days = new Map(); // "YYYY-MM-DD" (viewer's local date) -> {section, list}
  let lastId = null; // greatest id handled: the resume point
  let sock = null; // the current socket; events from older sockets are ignored
  let attempt = 0; // failed connection attempts in a row, for the backoff
  let retryTimer = 0;
  let pingTimer = 0;
  let pongTimer = 0;
  let resumed = false; // the current socket subscribed with since (not backfill)
  let quietUntil = Infinity; // rows added before this are history: no highlight
  let unread = 0;
  const baseTitle = document.title;

  // ---- ids and tags --------------------------------------------------------

  /** Compare two non-negative decimal strings exactly (ids can exceed 2^53). */
  function cmpNum(a, b) {
    a = a.replace(/^0+(?=\d)/, "");
    b = b.replace(/^0+(?=\d)/, "");
    if (a.length !== b.length) return a.length < b.length ? -1 : 1;
    return a < b ? -1 : a > b ? 1 : 0;
  }

  /** Order stream ids "ms-seq" as integer pairs: "9-0" < "10-0". */
  function cmpId(a, b) {
    const [am, as = "0"] = a.split("-");
    const [bm, bs = "0"] = b.split("-");
    return cmpNum(am, bm) || cmpNum(as, bs);
  }

  /** The client half of the server's tag normalization (the server has the last word). */
  function normalizeTag(raw) {
    return raw.normalize("NFKC").toLowerCase().trim().replace(/\s+/g, "-");
  }

  function parseTags(text) {
    const tags = [];
    for (const part of text.split(",")) {
      const tag = normalizeTag(part);
      if (tag === "*") return []; // "*" is everything, the same as no filter
      if (tag && !tags.includes(tag)) tags.push(tag);
    }
    return tags;
  }

  function tagsFromLocation() {
    return parseTags(new URLSearchParams(location.search).get("tags") || "");
  }

  /** A BCP 47 tag in its usual case: "pt-br" as "pt-BR", "zh-hant-tw" as "zh-Hant-TW". */
  function normalizeLang(raw) {
    const parts = raw.trim().split("-").filter(Boolean);
    return parts
      .map((p, i) => {
        if (i === 0) return p.toLowerCase();
        if (p.length === 4 && /^[a-z]+$/i.test(p)) return p[0].toUpperCase() + p.slice(1).toLowerCase();
        if (p.length === 2 && /^[a-z]+$/i.test(p)) return p.toUpperCase();
        return p.toLowerCase();
      })
      .join("-");
  }

  function parseLangs(text) {
    const out = [];
    for (const part of text.split(",")) {
      const lang = normalizeLang(part);
      if (lang && !out.includes(lang)) out.push(lang);
    }
    return out;
  }

  function langsFromLocation() {
    return parseLangs(new URLSearchParams(location.search).get("lang") || "");
  }

  /** Exact match, case aside: "en" does not include "en-GB" (the server's rule). */
  function langMatches(item) {
    if (!langs.length || typeof item.language !== "string" || !item.language) return true;
    const have = item.language.toLowerCase();
    return langs.some((l) => l.toLowerCase() === have);
  }

  /** "/?tags=world/europe,sport&lang=en,ru": readable, and a link reproduces the view. */
  function filterURL(tags, languages = langs) {
    const parts = [];
    if (tags.length) {
      parts.push("tags=" + tags.map((t) => encodeURIComponent(t).replace(/%2F/gi, "/")).join(","));
    }
    if (languages.length) parts.push("lang=" + languages.map(encodeURIComponent).join(","));
    return parts.length ? "/?" + parts.join("&") : "/";
  }

  /**
   * Point the page's Atom link at the feed of the current filter, so a feed
   * reader (or the browser) offered this page subscribes to what it shows.
   * Never with the token: a link is copied, logged and shared.
   */
  function updateFeedLink(tags = filter, languages = langs) {
    const link = document.getElementById("feed-link");
    if (!link) return;
    const query = filterURL(tags, languages).slice(1); // "" or "?tags=..&lang=.."
    link.href = "/v1/feed.atom" + query;
    link.title = "Wire: " + (tags.length ? describe(tags) : "all stories") + " (Atom)";
  }

  // ---- connection ----------------------------------------------------------

  function storedToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY) || "";
    } catch {
      return ""; // storage disabled: the token lives in this page only
    }
  }

  let token = storedToken();

  function saveToken(value) {
    token = value;
    try {
      if (value) sessionStorage.setItem(TOKEN_KEY, value);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch {
      // storage disabled: keep it for this page
    }
  }

  /** "?token=..." for the stream and any read, when the desk has a token. */
  function tokenQuery() {
    return token ? "?token=" + encodeURIComponent(token) : "";
  }

  function wsURL() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const params = new URLSearchParams();
    // Batched frames: a burst or a backfill arrives as a few frames of
    // newline-separated messages instead of one frame (and event) per item.
    params.set("batch", "1");
    if (langs.length) params.set("lang", langs.join(","));
    if (token) params.set("token", token);
    const query = params.toString();
    return scheme + location.host + "/v1/ws" + (query ? "?" + query : "");
  }

  /**
   * Was a socket that never opened refused for its token? A browser hides the
   * HTTP status of a refused upgrade (the close code is just 1006), so ask the
   * same URL over plain HTTP: the token is checked before anything else there.
   */
  async function refusedForToken() {
    try {
      const response = await fetch("/v1/ws" + tokenQuery(), { cache: "no-store" });
      return response.status === 401;
    } catch {
      return false; // the server is unreachable: that is for the backoff
    }
  }

  /** Stop connecting and ask for a token, once; the form's submit connects again. */
  function askForToken() {
    const had = Boolean(token);
    saveToken("");
    setState("offline", "Token required");
    tokenError.textContent = had ? "That token was not accepted." : "";
    tokenError.hidden = !had;
    tokenForm.hidden = false;
    tokenInput.focus();
  }

  tokenForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const value = tokenInput.value.trim();
    if (!value) return;
    saveToken(value);
    tokenInput.value = "";
    tokenForm.hidden = true;
    tokenError.hidden = true;
    attempt = 0;
    reconnectNow();
  });

  function setState(state, text) {
    statusEl.dataset.state = state;
    statusText.textContent = text;
  }

  function connect() {
    clearTimeout(retryTimer);
    retryTimer = 0;
    setState(
      attempt ? "reconnecting" : "connecting",
      attempt ? "Reconnecting…" : "Connecting…"
    );
    const ws = new WebSocket(wsURL());
    let opened = false;
    sock = ws;
    ws.onopen = () => {
      if (sock !== ws) return;
      opened = true;
      const msg = { type: "subscribe", tags: filter.length ? filter : ["*"] };
      if (langs.length) msg.languages = langs;
      // Resume after the last item handled; with none yet, show recent history.
      resumed = lastId !== null;
      if (resumed) msg.since = lastId;
      else msg.backfill = BACKFILL;
      ws.send(JSON.stringify(msg));
      keepAlive(ws);
    };
    ws.onmessage = (event) => {
      if (sock !== ws) return;
      keepAlive(ws);
      for (const line of event.data.split("\n")) {
        let msg;
        try {
          msg = JSON.parse(line);
        } catch {
          continue;
        }
        onMessage(msg);
      }
    };
    ws.onclose = async (event) => {
      if (sock !== ws) return;
      if (!opened && (await refusedForToken())) {
        if (sock !== ws) return; // the filter changed meanwhile
        sock = null;
        askForToken();
        return;
      }
      if (sock !== ws) return;
      lost(event.code, event.reason);
    };
  }

  /** Any message proves the socket alive; silence past a ping means it is dead. */
  function keepAlive(ws) {
    clearTimeout(pingTimer);
    clearTimeout(pongTimer);
    pingTimer = setTimeout(() => {
      if (sock !== ws || ws.readyState !== WebSocket.OPEN) return;
      ws.send('{"type":"ping"}');
      pongTimer = setTimeout(() => {
        // A dead network can take minutes to close a socket by itself.
        if (sock !== ws) return;
        ws.close();
        lost(1006, "no answer to ping");
      }, PONG_WAIT_MS);
    }, PING_EVERY_MS);
  }

  function lost(code, reason) {
    sock = null;
    clearTimeout(pingTimer);
    clearTimeout(pongTimer);
    if (code === 4001 || code === 4003) {
      // Retrying cannot fix a refused token.
      setState("offline", "Offline: " + (reason || "not allowed"));
      return;
    }
    // Exponential backoff, half of it random, so a restarted gateway is not
    // hit by every desk at the same instant. A slow-consumer close (4008) on
    // a socket that was live starts again from the shortest delay.
    const cap = Math.min(RETRY_MAX_MS, RETRY_MIN_MS * 2 ** attempt);
    const delay = cap / 2 + (Math.random() * cap) / 2;
    attempt += 1;
    setState("reconnecting", "Reconnecting…");
    statusEl.title = "Next attempt in " + Math.ceil(delay / 1000) + " s";
    retryTimer = setTimeout(connect, delay);
  }

  /** Drop the current socket (its late events are ignored) and connect afresh. */
  function reconnectNow() {
    const old = sock;
    sock = null;
    if (old) old.close(1000);
    clearTimeout(pingTimer);
    clearTimeout(pongTimer);
    connect();
  }

  window.addEventListener("online", () => {
    if (!sock && retryTimer) connect();
  });

  function onMessage(msg) {
    switch (msg.type) {
      case "subscribed":
        attempt = 0;
        // Backfill follows at once and is history, not news; a resume is all news.
        quietUntil = resumed ? 0 : Date.now() + FRESH_AFTER_MS;
        statusEl.title = "";
        setState("live", "Live");
        // Nothing handled yet: resume from where the gateway stood, so items
        // published while a first connection is down are not missed.
        if (lastId === null && typeof msg.position === "string") lastId = msg.position;
        return;
      case "item":
        if (msg.item && typeof msg.item === "object") addItem(msg.item, msg.ahead === true);
        return;
      case "error":
        onError(msg);
        return;
      default:
        return; // pong, or a message type this page does not know yet
    }
  }

  function onError(msg) {
    const text = String(msg.message || msg.code || "error");
    if (msg.code === "history_truncated") {
      showNotice("Some older items are no longer kept on the server and could not be shown.");
    } else if (
      msg.field === "tags" ||
      msg.field === "languages" ||
      ["invalid_tag", "too_many_tags", "forbidden", "invalid_language"].includes(msg.code)
    ) {
      filterError.textContent = "Filter not accepted: " + text;
      filterError.hidden = false;
      setState("offline", "Not subscribed");
    } else {
      showNotice(text);
    }
  }

  function showNotice(text) {
    notice.textContent = text;
    notice.hidden = false;
  }

  // ---- rendering -----------------------------------------------------------

  function itemDate(item) {
    const d = new Date(item.published_at);
    if (!Number.isNaN(d.getTime())) return d;
    return new Date(Number(String(item.id).split("-")[0])); // the id starts with ms
  }

  const pad = (n) => String(n).padStart(2, "0");

  function dayKey(d) {
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate());
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function safeURL(raw) {
    try {
      const url = new URL(raw);
      return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
    } catch {
      return null;
    }
  }

  function chips(tags) {
    const list = el("ul", "tags");
    for (const tag of Array.isArray(tags) ? tags : []) {
      const li = el("li");
      const a = el("a", "chip", String(tag));
      a.href = filterURL([String(tag)]);
      a.dataset.tag = String(tag);
      a.title = "Show only " + tag;
      li.append(a);
      list.append(li);
    }
    return list;
  }

  function timeCell(item, d) {
    const time = el("time", "time", pad(d.getHours()) + ":" + pad(d.getMinutes()));
    time.dateTime = d.toISOString();
    time.title = fullFormat.format(d);
    return time;
  }

  /** "TOKYO, Dec 3 (WIRE) -": the place in capitals and the (viewer's) day. */
  function dateline(item, d) {
    if (typeof item.located !== "string" || !item.located) return "";
    return item.located.toUpperCase() + ", " + MONTHS[d.getMonth()] + " " + d.getDate() + " (" + AGENCY + ") -";
  }

  function byline(text) {
    const t = String(text).trim();
    return /^by\s/i.test(t) ? t : "By " + t;
  }

  /** A language badge, unless the filter already says which language this is. */
  function showsBadge(item) {
    if (typeof item.language !== "string" || !item.language) return false;
    if (langs.length === 1) return false;
    if (langs.length > 1) return true;
    return item.language.toLowerCase() !== PAGE_LANG.toLowerCase();
  }

  function firstPicture(item) {
    const assoc = Array.isArray(item.associations) ? item.associations : [];
    return assoc.find((a) => a && a.type === "picture") || null;
  }

  /** The picture's best URL for a small view: a rendition's href or its uri (http/https only). */
  function pictureURL(pic) {
    const renditions = Array.isArray(pic.renditions) ? pic.renditions : [];
    const thumb = renditions.find((r) => r && /thumb/i.test(String(r.name))) || renditions[0];
    return (thumb && safeURL(String(thumb.href))) || safeURL(String(pic.uri));
  }

  function image(pic, className) {
    const src = pictureURL(pic);
    if (!src) return null;
    const img = el("img", className);
    img.loading = "lazy";
    img.decoding = "async";
    img.referrerPolicy = "no-referrer";
    img.alt = typeof pic.alt === "string" ? pic.alt : "";
    img.src = src;
    return img;
  }

  function renderStory(item, d) {
    const row = el("li", "item");
    const urgency = Number(item.urgency);
    if (urgency === 1 || urgency === 2) row.classList.add("urgency-" + urgency);
    const advisory = item.type === "advisory";
    if (advisory) row.classList.add("advisory");
    if (item.correction === true) row.classList.add("corrected");
    const main = el("div", "main");
    const head = el("div", "headline");
    if (advisory) head.append(el("span", "flag advisory-flag", "Advisory"));
    if (urgency === 1) head.append(el("span", "flag flash", "Flash"));
    else if (urgency === 2) head.append(el("span", "flag urgent", "Urgent"));
    if (item.mark) head.append(el("span", "mark", String(item.mark)));
    if (item.correction === true && String(item.mark || "").toLowerCase() !== "corrected") {
      head.append(el("span", "mark correction", "Corrected"));
    }
    if (showsBadge(item)) head.append(el("span", "lang-badge", item.language));
    const place = dateline(item, d);
    if (place) head.append(el("span", "dateline", place));
    const href = item.url ? safeURL(String(item.url)) : null;
    const title = el(href ? "a" : "span", "title", String(item.title ?? ""));
    if (href) {
      title.href = href;
      title.target = "_blank";
      title.rel = "noopener noreferrer";
    }
    head.append(title);
    main.append(head);
    if (item.subtitle) main.append(el("p", "subtitle", String(item.subtitle)));
    if (item.byline) main.append(el("p", "byline", byline(item.byline)));
    main.append(chips(item.tags));
    row.append(timeCell(item, d), main);
    const pic = firstPicture(item);
    const thumb = pic && image(pic, "thumb");
    if (thumb) row.append(thumb);
    row.tabIndex = 0;
    row.title = "Open the story";
    return row;
  }

  function renderWithdrawal(item, d) {
    const row = el("li", "item withdrawn");
    const main = el("div", "main");
    const head = el("div", "headline");
    head.append(el("span", "flag killed", "Withdrawn"));
    head.append(el("span", "title", "This story has been withdrawn."));
    main.append(head);
    const reason = item.reason ? "Reason: " + String(item.reason) : "No reason was given.";
    main.append(el("p", "subtitle reason", reason));
    main.append(chips(item.tags));
    row.append(timeCell(item, d), main);
    return row;
  }

  function addItem(item, ahead) {
    if (typeof item.id !== "string") return;
    // A flash sent ahead of queued items must not move the resume point past
    // the items it overtook; they follow, and a resume replays them.
    if (!ahead && (!lastId || cmpId(item.id, lastId) > 0)) lastId = item.id;
    if (seen.has(item.id)) return;
    seen.add(item.id);
    if (!langMatches(item)) return;
    const guid = typeof item.guid === "string" ? item.guid : item.id;
    const shown = stories.get(guid);
    if (shown && cmpId(shown.id, item.id) > 0) return; // an older version, superseded
    if (shown) removeRow(shown.el);
    const d = itemDate(item);
    const row = item.pubstatus === "canceled" ? renderWithdrawal(item, d) : renderStory(item, d);
    row.dataset.id = item.id;
    row.dataset.guid = guid;
    if (item.version > 1) row.dataset.version = String(item.version);
    if (Date.now() > quietUntil) {
      row.classList.add("fresh");
      if (document.hidden) unread += 1;
    }
    place(row, d);
    stories.set(guid, { id: item.id, el: row });
    trim();
    refresh();
  }

  /** Put a row in its day (newest day first) and in id order within it (newest first). */
  function place(row, d) {
    const key = dayKey(d);
    let day = days.get(key);
    if (!day) {
      const section = el("section", "day");
      section.dataset.day = key;
      const heading = el("h2", "day-heading", dayFormat.format(d));
      const list = el("ol", "items");
      section.append(heading, list);
      let before = null;
      for (const other of feed.children) {
        if (other.dataset.day < key) {
          before = other;
          break;
        }
      }
      feed.insertBefore(section, before);
      day = { section, list };
      days.set(key, day);
    }
    let before = null;
    for (const other of day.list.children) {
      if (cmpId(other.dataset.id, row.dataset.id) < 0) {
        before = other;
        break;
      }
    }
    day.list.insertBefore(row, before);
  }

  function removeRow(row) {
    const list = row.parentElement;
    row.remove();
    if (list && !list.children.length) {
      const section = list.parentElement;
      days.delete(section.dataset.day);
      section.remove();
    }
  }

  function trim() {
    let oldest = null;
    while (stories.size > MAX_ROWS) {
      const lastDay = feed.lastElementChild;
      const row = lastDay && lastDay.querySelector(".items").lastElementChild;
      if (!row) return;
      stories.delete(row.dataset.guid);
      removeRow(row);
      oldest = row.dataset.id;
    }
    // Ids below the oldest row dropped can only come back with a backfill,
    // which happens on a fresh view (empty set) only: forgetting them keeps
    // the set from growing through a long shift.
    if (oldest && seen.size > 2 * MAX_ROWS) {
      seen = new Set([...seen].filter((id) => cmpId(id, oldest) > 0));
    }
  }

  function refresh() {
    const n = stories.size;
    empty.hidden = n > 0;
    count.textContent = n ? n + (n === 1 ? " story" : " stories") : "";
    const view = filter.length ? describe(filter) + " · " : "";
    document.title = (unread ? "(" + unread + ") " : "") + view + baseTitle;
  }

  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) {
      unread = 0;
      refresh();
    }
  });

  // ---- filter --------------------------------------------------------------

  function describe(tags) {
    return tags.length ? tags.join(", ") : "";
  }

  /** Show a new filter: clear, resubscribe with a fresh backfill, keep it in the URL. */
  function setFilter(tags, push, languages = langs) {
    if (push && describe(tags) === describe(filter) && describe(languages) === describe(langs)) return;
    filter = tags;
    langs = languages;
    if (push) history.pushState(null, "", filterURL(tags, languages));
    updateFeedLink(tags, languages);
    input.value = describe(tags);
    langInput.value = describe(languages);
    filterError.hidden = true;
    notice.hidden = true;
    feed.replaceChildren();
    stories = new Map();
    seen = new Set();
    days = new Map();
    lastId = null;
    quietUntil = Infinity;
    attempt = 0;
    empty.textContent = emptyText();
    refresh();
    reconnectNow();
  }

  function emptyText() {
    return filter.length
      ? "No stories for " + describe(filter) + " yet. New ones appear here as they are published."
      : "No stories yet. New ones appear here as they are published.";
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    setFilter(parseTags(input.value), true, parseLangs(langInput.value));
  });

  document.getElementById("filter-clear").addEventListener("click", () => setFilter([], true));

  feed.addEventListener("click", (event) => {
    const chip = event.target.closest("a.chip");
    // Modified clicks keep their browser meaning (open the filtered view in a new tab).
    if (!chip || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
    event.preventDefault();
    setFilter([chip.dataset.tag], true);
    window.scrollTo({ top: 0 });
  });

  window.addEventListener("popstate", () => setFilter(tagsFromLocation(), false, langsFromLocation()));

  // ---- the story view -------------------------------------------------------

  feed.addEventListener("click", (event) => {
    if (event.target.closest("a, button")) return; // links and chips keep their meaning
    const row = event.target.closest("li.item");
    if (row && !row.classList.contains("withdrawn")) openStory(row.dataset.guid);
  });

  feed.addEventListener("keydown", (event) => {
    const row = event.target.closest && event.target.closest("li.item");
    if (event.key === "Enter" && row === event.target && !row.classList.contains("withdrawn")) {
      openStory(row.dataset.guid);
    }
  });

  document.getElementById("story-close").addEventListener("click", closeStory);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !storyPanel.hidden) closeStory();
  });

  function closeStory() {
    storyPanel.hidden = true;
    storyPanel.dataset.guid = "";
  }

  const part = (id) => document.getElementById(id);

  async function openStory(guid) {
    if (!guid) return;
    storyPanel.dataset.guid = guid;
    storyPanel.hidden = false;
    part("story-title").textContent = "Loading…";
    for (const id of ["story-meta", "story-byline", "story-summary", "story-more"]) part(id).textContent = "";
    for (const id of ["story-body", "story-pictures", "story-translations", "story-versions"]) {
      part(id).replaceChildren();
    }
    let story;
    try {
      const headers = token ? { Authorization: "Bearer " + token } : {};
      const response = await fetch("/v1/stories/" + encodeURIComponent(guid), { headers, cache: "no-store" });
      const data = await response.json().catch(() => null);
      if (!response.ok || !data || !data.story) throw new Error("HTTP " + response.status);
      story = data.story;
    } catch (err) {
      if (storyPanel.dataset.guid === guid) part("story-title").textContent = "Could not load the story (" + err.message + ").";
      return;
    }
    if (storyPanel.dataset.guid === guid) showStory(story);
  }

  function showStory(story) {
    const item = story.current || {};
    const d = itemDate(item);
    const meta = [dateline(item, d), item.language, item.type === "advisory" ? "Advisory" : ""];
    part("story-meta").textContent = meta.filter(Boolean).join(" · ");
    part("story-title").textContent = String(item.title ?? "");
    part("story-byline").textContent = item.byline ? byline(item.byline) : "";
    part("story-summary").textContent = item.summary ? String(item.summary) : "";
    for (const para of String(item.body || "").split(/\n\s*\n/)) {
      if (para.trim()) part("story-body").append(el("p", "", para));
    }
    for (const pic of Array.isArray(item.associations) ? item.associations : []) {
      if (!pic || pic.type !== "picture") continue;
      const img = image(pic, "story-picture");
      if (!img) continue;
      const figure = el("figure");
      figure.append(img);
      const caption = [pic.caption, pic.credit ? "Credit: " + pic.credit : ""].filter(Boolean).join(" · ");
      if (caption) figure.append(el("figcaption", "", String(caption)));
      part("story-pictures").append(figure);
    }
    const href = item.url ? safeURL(String(item.url)) : null;
    if (href) {
      const a = el("a", "read-more", "Read more");
      a.href = href;
      a.target = "_blank";
      a.rel = "noopener noreferrer";
      part("story-more").append(a);
    }
    showTranslations(story);
    for (const version of Array.isArray(story.versions) ? story.versions : []) {
      const li = el("li", "story-version");
      const when = itemDate(version);
      const marks = [
        "v" + String(version.version),
        fullFormat.format(when),
        version.mark ? String(version.mark) : "",
        version.correction === true ? "correction" : "",
      ];
      li.textContent = marks.filter(Boolean).join(" · ") + " — " + String(version.title ?? "");
      part("story-versions").append(li);
    }
  }

  function showTranslations(story) {
    const list = part("story-translations");
    const links = [];
    const original = story.translation_of || (story.current && story.current.translation_of);
    if (typeof original === "string") links.push({ guid: original, label: "Original" });
    for (const t of Array.isArray(story.translations) ? story.translations : []) {
      if (t && typeof t.guid === "string") links.push({ guid: t.guid, label: String(t.language || t.guid) });
    }
    for (const link of links) {
      const li = el("li");
      const a = el("a", "translation", link.label);
      a.href = "#";
      a.dataset.guid = link.guid;
      a.addEventListener("click", (event) => {
        event.preventDefault();
        openStory(link.guid);
      });
      li.append(a);
      list.append(li);
    }
    if (!links.length) list.append(el("li", "hint", "None."));
  }

  input.value = describe(filter);
  langInput.value = describe(langs);
  empty.textContent = emptyText();
  updateFeedLink();
  refresh();
  connect();
})();
