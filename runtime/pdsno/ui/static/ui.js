// PDSNO dashboard: the live event feed, and refreshing the parts of a page that events change.
"use strict";

const FEED_MAX = 60;
// Event types after which the page's live regions may show something new.
const REFRESHING = /^(DEVICE_|CONFIG_|CONTROLLER_|ANOMALY_|EMERGENCY_)/;

function subjectLink(event) {
  const subject = event.subject || "";
  if (subject.startsWith("nib-dev-")) return "/ui/devices/" + encodeURIComponent(subject);
  if (subject.startsWith("chg-")) return "/ui/proposals/" + encodeURIComponent(subject);
  return null;
}

function feedItem(event, fresh) {
  const item = document.createElement("li");
  item.dataset.seq = event.seq;
  item.dataset.type = event.event_type;
  item.dataset.subject = event.subject || "";
  if (fresh) item.classList.add("new");
  const type = document.createElement("span");
  type.className = "type";
  type.textContent = event.event_type;
  const meta = document.createElement("span");
  meta.className = "meta";
  const when = new Date(event.timestamp).toLocaleTimeString();
  meta.append(`#${event.seq} ${when} · ${event.actor}`);
  if (event.subject) {
    meta.append(" · ");
    const href = subjectLink(event);
    const target = document.createElement(href ? "a" : "span");
    if (href) target.href = href;
    target.textContent = event.subject;
    meta.append(target);
  }
  item.append(type, meta);
  return item;
}

let refreshTimer = null;

async function refreshLiveRegions() {
  const answer = await fetch(location.href, { credentials: "same-origin", cache: "no-store" });
  if (!answer.ok || answer.redirected) return;
  const fresh = new DOMParser().parseFromString(await answer.text(), "text/html");
  for (const region of document.querySelectorAll("[data-live]")) {
    // Never pull a form out from under someone typing in it.
    if (region.contains(document.activeElement) && document.activeElement !== document.body) continue;
    const replacement = fresh.getElementById(region.id);
    if (replacement && replacement.innerHTML !== region.innerHTML) region.replaceWith(replacement);
  }
}

function refreshSoon() {
  clearTimeout(refreshTimer);
  // Events come in bursts (a discovery writes one per device), a batch per poll of the stream: waiting
  // longer than one poll makes one refresh of the whole burst.
  refreshTimer = setTimeout(refreshLiveRegions, 1500);
}

function follow(feed) {
  const state = document.getElementById("feed-state");
  const source = new EventSource(feed.dataset.stream);
  source.addEventListener("open", () => {
    state.textContent = "live";
    state.classList.add("live");
  });
  source.addEventListener("error", () => {
    state.textContent = "reconnecting";
    state.classList.remove("live");
  });
  const show = (fresh) => (message) => {
    const event = JSON.parse(message.data);
    if (feed.querySelector(`li[data-seq="${event.seq}"]`)) return;
    feed.prepend(feedItem(event, fresh));
    while (feed.children.length > FEED_MAX) feed.lastElementChild.remove();
    if (fresh && REFRESHING.test(event.event_type)) refreshSoon();
  };
  // "history" is the backlog sent on connecting; "audit" is what happened since.
  source.addEventListener("history", show(false));
  source.addEventListener("audit", show(true));
}

document.addEventListener("DOMContentLoaded", () => {
  const feed = document.getElementById("feed");
  if (feed) follow(feed);
});
