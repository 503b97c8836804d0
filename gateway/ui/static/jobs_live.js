// The job page, live: the output as the job writes it and its states as they change, both
// from the gateway's server-sent events; and a confirmation before a form marked data-confirm.
// Served by the gateway (CSP script-src 'self'); the page works without it, only not live.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
  const log = document.getElementById("log");
  if (log) followOutput(log, 0);
  const timeline = document.getElementById("timeline");
  if (timeline && timeline.dataset.ended !== "true") followStates(timeline);
});

function followOutput(log, offset, failures = 0) {
  // EventSource would reconnect on its own from the start: reconnect by hand from the offset
  // reached, so that no line is shown twice; give up after a few failures in a row.
  const status = document.getElementById("log-status");
  const url = new URL(log.dataset.stream, window.location.href);
  url.searchParams.set("offset", String(offset));
  const source = new EventSource(url);
  let reached = offset;
  source.addEventListener("output", (event) => {
    const chunk = JSON.parse(event.data);
    log.append(document.createTextNode(chunk.data));
    reached = chunk.next_offset;
    log.scrollTop = log.scrollHeight;
  });
  source.addEventListener("end", (event) => {
    source.close();
    const end = JSON.parse(event.data);
    if (end.complete) {
      status.textContent = log.dataset.endedText;
    } else {  // the stream's time was up: the job writes on
      window.setTimeout(() => followOutput(log, end.next_offset), 1000);
    }
  });
  source.onerror = () => {
    source.close();
    const again = reached === offset ? failures + 1 : 1;
    if (again > 5) {
      status.textContent = log.dataset.errorText;
    } else {
      window.setTimeout(() => followOutput(log, reached, again), 2000);
    }
  };
}

function stateLabel(state) {
  const found = document.getElementById("state-labels")
    .content.querySelector(`[data-state="${CSS.escape(state)}"]`);
  if (found) return found.cloneNode(true);
  const span = document.createElement("span");
  span.textContent = state;
  return span;
}

function followStates(timeline) {
  const ended = new Set(timeline.dataset.endedStates.split(" "));
  let last = Number(timeline.dataset.last);
  const source = new EventSource(timeline.dataset.stream);
  source.addEventListener("state", (event) => {
    const change = JSON.parse(event.data);
    if (Number(event.lastEventId) <= last) return;  // shown when the page was made
    last = Number(event.lastEventId);
    const item = document.createElement("li");
    const time = document.createElement("time");
    time.dateTime = change.at;
    time.textContent = change.at.replace("T", " ").slice(0, 19) + " UTC ";
    item.append(time, stateLabel(change.to_state));
    if (change.detail) item.append(" — " + change.detail);
    timeline.append(item);
    const current = document.getElementById("job-state");
    current.replaceChildren(stateLabel(change.to_state));
    if (ended.has(change.to_state)) {
      source.close();
      document.getElementById("cancel")?.remove();
    }
  });
}
