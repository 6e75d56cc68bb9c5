// The calendar page (issue 15): sign in, the caller's unit tree, a day calendar of a unit, slot
// search with each exclusion in words, booking. grpc-web through the edge that serves this page,
// with the caller's bearer token; the services decide what the caller may see.
import { create } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { OrgService } from "./gen/pm/org/v1/org_service_pb.js";
import { type ServiceUnit, UnitKind } from "./gen/pm/org/v1/resources_pb.js";
import {
  type CalendarEntry,
  type Exclusion,
  ExclusionSubject,
  SchedulingService,
  type Slot,
} from "./gen/pm/scheduling/v1/scheduling_service_pb.js";
import { AppointmentState, AppointmentSchema } from "./gen/pm/scheduling/v1/resources_pb.js";
import { IntervalSchema } from "./gen/pm/types/v1/types_pb.js";
import { exclusionSentence, reasonOf, refusalSentence } from "./words.js";

const DEMO_PRINCIPALS: [string, string][] = [
  ["principals/admin", "Avery Admin (organization administrator)"],
  ["principals/casey-ccm", "Casey (CCM program manager)"],
  ["principals/dr-okafor", "Dr. Amara Okafor (provider)"],
  ["principals/jordan-billing", "Jordan (billing staff)"],
];

const state = {
  token: sessionStorage.getItem("pm.token") ?? "",
  who: sessionStorage.getItem("pm.who") ?? "",
  org: sessionStorage.getItem("pm.org") ?? "organizations/acme",
  units: [] as ServiceUnit[],
  unit: "",
  day: new Date().toISOString().slice(0, 10),
  zone: "UTC",
};

const auth: Interceptor = (next) => async (req) => {
  req.header.set("authorization", `Bearer ${state.token}`);
  return next(req);
};
const transport = createGrpcWebTransport({ baseUrl: location.origin, interceptors: [auth] });
const org = createClient(OrgService, transport);
const scheduling = createClient(SchedulingService, transport);

const app = document.getElementById("app") as HTMLElement;

function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string> = {},
  ...children: (Node | string)[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  el.append(...children);
  return el;
}

/** A stable colour per unit (hue from its name). */
function colour(unit: string): string {
  let hash = 0;
  for (const ch of unit) hash = (hash * 31 + ch.charCodeAt(0)) % 360;
  return `hsl(${hash}, 60%, 45%)`;
}

function say(where: HTMLElement, text: string, error = false) {
  where.textContent = text;
  where.className = error ? "error" : "status";
}

function describe(err: unknown): string {
  if (err instanceof ConnectError) {
    return refusalSentence(err.code, reasonOf(err), err.rawMessage);
  }
  return `Something went wrong: ${String(err)}`;
}

// ---------------------------------------------------------------- sign-in

function signInScreen(message = "") {
  const status = h("p", { role: "status", id: "sign-in-status" });
  if (message) say(status, message, true);
  const orgInput = h("input", { id: "org", name: "org", value: state.org });
  const list = h("ul", { "aria-label": "Demo principals" });
  for (const [principal, label] of DEMO_PRINCIPALS) {
    const button = h("button", { type: "button", "data-principal": principal }, `Sign in as ${label}`);
    button.addEventListener("click", () => void devSignIn(principal, orgInput.value.trim(), status));
    list.append(h("li", {}, button));
  }
  const tokenInput = h("input", { id: "token", name: "token", type: "password", autocomplete: "off" });
  const tokenForm = h(
    "form",
    { "aria-label": "Sign in with a token" },
    h("label", { for: "token" }, "Bearer token from your organization's identity provider"),
    tokenInput,
    h("button", { type: "submit" }, "Sign in with token"),
  );
  tokenForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    signedIn(tokenInput.value.trim(), "token", orgInput.value.trim());
  });
  app.replaceChildren(
    h(
      "section",
      { id: "sign-in", "aria-labelledby": "sign-in-title" },
      h("h1", { id: "sign-in-title" }, "Sign in to the calendar"),
      h("label", { for: "org" }, "Organization"),
      orgInput,
      h("h2", {}, "Demo principals (dev mode)"),
      list,
      tokenForm,
      status,
    ),
  );
  (list.querySelector("button") as HTMLButtonElement | null)?.focus();
}

async function devSignIn(principal: string, orgName: string, status: HTMLElement) {
  say(status, `Signing in as ${principal}…`);
  try {
    const response = await fetch("/dev/sign-in", { method: "POST", body: principal });
    const text = await response.text();
    if (!response.ok) {
      say(
        status,
        response.status === 404 && !text
          ? "Dev sign-in is off on this server: sign in with a token."
          : text,
        true,
      );
      return;
    }
    signedIn(text.trim(), principal, orgName);
  } catch (err) {
    say(status, `Could not reach the server: ${String(err)}`, true);
  }
}

function signedIn(token: string, who: string, orgName: string) {
  state.token = token;
  state.who = who;
  state.org = orgName || "organizations/acme";
  sessionStorage.setItem("pm.token", token);
  sessionStorage.setItem("pm.who", who);
  sessionStorage.setItem("pm.org", state.org);
  void mainScreen();
}

function signOut() {
  stopWatching();
  sessionStorage.removeItem("pm.token");
  sessionStorage.removeItem("pm.who");
  state.token = "";
  state.unit = "";
  signInScreen();
}

// ---------------------------------------------------------------- the main screen

const KIND: Record<number, string> = {
  [UnitKind.CLINIC]: "clinic",
  [UnitKind.SERVICE_LINE]: "service line",
  [UnitKind.PROGRAM]: "program",
  [UnitKind.EMPLOYER_PROGRAM]: "employer program",
  [UnitKind.REFERRAL_PATH]: "referral path",
};

async function mainScreen() {
  const status = h("p", { role: "status", id: "status" });
  const tree = h("nav", { "aria-label": "Units", id: "units" });
  const calendar = h("section", { "aria-label": "Day calendar", id: "calendar" });
  const search = h("section", { "aria-label": "Slot search", id: "search" });
  const signOutButton = h("button", { type: "button", id: "sign-out" }, "Sign out");
  signOutButton.addEventListener("click", signOut);
  app.replaceChildren(
    h("header", {}, h("h1", {}, "Calendar"), h("span", { id: "who" }, `Signed in as ${state.who}`), signOutButton),
    status,
    h("main", {}, tree, calendar, search),
  );
  try {
    const units: ServiceUnit[] = [];
    let pageToken = "";
    do {
      const page = await org.listServiceUnits({ parent: state.org, pageSize: 200, pageToken });
      units.push(...page.serviceUnits);
      pageToken = page.nextPageToken;
    } while (pageToken);
    state.units = units;
  } catch (err) {
    if (err instanceof ConnectError && err.code === Code.Unauthenticated) {
      signInScreen("Your sign-in has expired: sign in again.");
      return;
    }
    say(status, describe(err), true);
    return;
  }
  renderTree(tree, calendar, search);
}

function renderTree(tree: HTMLElement, calendar: HTMLElement, search: HTMLElement) {
  const names = new Set(state.units.map((u) => u.name));
  const children = new Map<string, ServiceUnit[]>();
  for (const unit of state.units) {
    // A unit whose parent is out of the caller's scope is a root of the caller's tree.
    const parent = names.has(unit.parentUnit) ? unit.parentUnit : "";
    children.set(parent, [...(children.get(parent) ?? []), unit]);
  }
  const buttons: HTMLButtonElement[] = [];
  const branch = (parent: string): HTMLUListElement => {
    const list = h("ul", parent ? {} : { role: "list" });
    for (const unit of (children.get(parent) ?? []).sort((a, b) => a.displayName.localeCompare(b.displayName))) {
      const button = h(
        "button",
        { type: "button", "data-unit": unit.name, style: `--c: ${colour(unit.name)}`, "aria-current": "false" },
        `${unit.displayName} (${KIND[unit.kind] ?? "unit"})`,
      );
      button.addEventListener("click", () => {
        for (const b of buttons) b.setAttribute("aria-current", "false");
        button.setAttribute("aria-current", "true");
        state.unit = unit.name;
        void renderCalendar(calendar);
        renderSearch(search, calendar);
      });
      buttons.push(button);
      const item = h("li", {}, button);
      if (children.has(unit.name)) item.append(branch(unit.name));
      list.append(item);
    }
    return list;
  };
  // Arrow keys move through the tree's buttons.
  tree.addEventListener("keydown", (ev) => {
    const at = buttons.indexOf(document.activeElement as HTMLButtonElement);
    if (at < 0) return;
    if (ev.key === "ArrowDown" || ev.key === "ArrowUp") {
      ev.preventDefault();
      const next = buttons[(at + (ev.key === "ArrowDown" ? 1 : buttons.length - 1)) % buttons.length];
      next?.focus();
    }
  });
  tree.replaceChildren(h("h2", {}, "Units"), branch(""));
  if (!state.units.length) tree.append(h("p", {}, "No units are in your scope."));
  buttons[0]?.focus();
}

// ---------------------------------------------------------------- the day calendar

function dayWindow(day: string) {
  const start = new Date(`${day}T00:00:00Z`);
  // A day in any zone lies within [start - 14h, start + 38h]: ask for that, show the zone's day.
  return create(IntervalSchema, {
    startTime: timestampFromDate(new Date(start.getTime() - 14 * 3600_000)),
    endTime: timestampFromDate(new Date(start.getTime() + 38 * 3600_000)),
  });
}

function zoneDay(date: Date, zone: string): string {
  return new Intl.DateTimeFormat("en-CA", { timeZone: zone, year: "numeric", month: "2-digit", day: "2-digit" }).format(date);
}

function clock(date: Date, zone: string): string {
  return new Intl.DateTimeFormat("en-GB", { timeZone: zone, hour: "2-digit", minute: "2-digit" }).format(date);
}

const zones = new Map<string, string>();
async function zoneOf(locationName: string): Promise<string> {
  if (!locationName) return "UTC";
  const known = zones.get(locationName);
  if (known) return known;
  try {
    const loc = await org.getLocation({ name: locationName });
    zones.set(locationName, loc.timeZone || "UTC");
  } catch {
    zones.set(locationName, "UTC");
  }
  return zones.get(locationName) ?? "UTC";
}

function short(name: string): string {
  return name.split("/").pop() ?? name;
}

/** The live feed of the shown unit: WatchCalendar from the sequence the calendar was read at. */
let watching: AbortController | null = null;

function stopWatching() {
  watching?.abort();
  watching = null;
}

/** Keeps the calendar current: every change of the unit re-reads the day (coalesced). After a
 * dropped stream it resumes from the last sequence seen, so no change is lost or applied twice. */
function watch(calendar: HTMLElement, scope: string, from: bigint) {
  stopWatching();
  const control = new AbortController();
  watching = control;
  let after = from;
  let pending = false;
  void (async () => {
    while (!control.signal.aborted) {
      try {
        for await (const event of scheduling.watchCalendar({ scope, afterSequence: after }, { signal: control.signal })) {
          after = event.sequence;
          if (!pending) {
            pending = true;
            setTimeout(() => {
              pending = false;
              if (!control.signal.aborted) void refreshEntries(calendar, false);
            }, 100);
          }
        }
      } catch (err) {
        if (control.signal.aborted) return;
        if (err instanceof ConnectError && (err.code === Code.Unauthenticated || err.code === Code.PermissionDenied)) return;
      }
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  })();
}

async function renderCalendar(calendar: HTMLElement) {
  stopWatching();
  const dayInput = h("input", { id: "day", name: "day", type: "date", value: state.day });
  dayInput.addEventListener("change", () => {
    state.day = dayInput.value;
    void refreshEntries(calendar, true);
  });
  const status = h("p", { role: "status", id: "calendar-status" });
  const list = h("ol", { id: "entries", "aria-label": "Calendar entries" });
  const zoneLine = h("p", { id: "zone" });
  calendar.replaceChildren(h("h2", {}, "Day"), h("label", { for: "day" }, "Day"), dayInput, zoneLine, status, list);
  await refreshEntries(calendar, true);
}

/** Reads the day again into the calendar's list; `rewatch` (re)starts the live feed from the read. */
async function refreshEntries(calendar: HTMLElement, rewatch: boolean) {
  const status = calendar.querySelector("#calendar-status") as HTMLElement | null;
  const list = calendar.querySelector("#entries") as HTMLElement | null;
  const zoneLine = calendar.querySelector("#zone") as HTMLElement | null;
  if (!status || !list || !zoneLine) return;
  const unit = state.unit;
  if (rewatch) say(status, "Loading…");
  let entries: CalendarEntry[];
  try {
    const response = await scheduling.listCalendar({ scope: unit, window: dayWindow(state.day) });
    entries = response.entries;
    if (rewatch) watch(calendar, unit, response.sequence);
  } catch (err) {
    say(status, describe(err), true);
    return;
  }
  if (unit !== state.unit) return;
  const location = entries
    .map((e) => (e.entry.case === "appointment" || e.entry.case === "availability" ? e.entry.value.location : ""))
    .find((l) => l);
  state.zone = await zoneOf(location ?? "");
  zoneLine.textContent = `Times in ${state.zone}`;
  type Row = { start: Date; end: Date; kind: string; text: string; unit: string };
  const rows: Row[] = [];
  for (const e of entries) {
    const c = e.entry;
    if (!c.case) continue;
    const iv = c.value.interval;
    if (!iv?.startTime || !iv.endTime) continue;
    const start = timestampDate(iv.startTime);
    const end = timestampDate(iv.endTime);
    if (c.case === "appointment") {
      const a = c.value;
      const held = a.state === AppointmentState.HELD;
      rows.push({
        start, end, unit: a.unit, kind: held ? "hold" : "appointment",
        text: `${held ? "Hold" : "Appointment"}: ${short(a.provider)} with ${short(a.patient)} (${short(a.visitType)}${a.room ? `, room ${short(a.room)}` : ""})`,
      });
    } else if (c.case === "availability") {
      rows.push({ start, end, unit: c.value.unit, kind: "free", text: `Free: ${short(c.value.provider)} at ${short(c.value.location)}` });
    } else if (c.case === "blocked") {
      rows.push({ start, end, unit: state.unit, kind: "blocked", text: `Blocked: ${short(c.value.provider)}` });
    }
  }
  const shown = rows
    .filter((r) => zoneDay(r.start, state.zone) === state.day || zoneDay(r.end, state.zone) === state.day)
    .sort((a, b) => a.start.getTime() - b.start.getTime());
  list.replaceChildren(
    ...shown.map((r) =>
      h(
        "li",
        { class: `entry ${r.kind}`, style: `--c: ${colour(r.unit || state.unit)}`, "data-kind": r.kind },
        `${clock(r.start, state.zone)}–${clock(r.end, state.zone)} ${r.text}`,
      ),
    ),
  );
  say(status, shown.length ? `${shown.length} entries` : "Nothing on this day.");
}

// ---------------------------------------------------------------- slot search and booking

function renderSearch(search: HTMLElement, calendar: HTMLElement) {
  const patient = h("input", { id: "patient", name: "patient", required: "", placeholder: "p-0001" });
  const visitType = h("select", { id: "visit-type", name: "visit-type" });
  const day = h("input", { id: "search-day", name: "search-day", type: "date", value: state.day, required: "" });
  const status = h("p", { role: "status", id: "search-status" });
  const slots = h("ol", { id: "slots", "aria-label": "Slots" });
  const exclusions = h("ul", { id: "exclusions", "aria-label": "Why providers are excluded" });
  const form = h(
    "form",
    { "aria-label": "Find slots" },
    h("label", { for: "patient" }, "Patient id (or patient resource name)"),
    patient,
    h("label", { for: "visit-type" }, "Visit type"),
    visitType,
    h("label", { for: "search-day" }, "Day"),
    day,
    h("p", {}, h("button", { type: "submit", id: "find" }, "Find slots")),
  );
  search.replaceChildren(
    h("h2", {}, "Find a slot"),
    form,
    status,
    h("h3", {}, "Slots"),
    slots,
    h("h3", {}, "Excluded providers"),
    exclusions,
  );
  void scheduling
    .listVisitTypes({ parent: state.unit, pageSize: 200 })
    .then((r) => {
      visitType.replaceChildren(
        ...r.visitTypes.map((v) => h("option", { value: v.name }, `${v.displayName} (${v.code})`)),
      );
    })
    .catch((err: unknown) => say(status, describe(err), true));
  const patientName = () => {
    const v = patient.value.trim();
    return v.includes("/") ? v : `${state.org}/patients/${v}`;
  };
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    void (async () => {
      slots.replaceChildren();
      exclusions.replaceChildren();
      if (!patient.value.trim()) {
        say(status, "Enter the patient's id.", true);
        patient.focus();
        return;
      }
      say(status, "Searching…");
      const start = new Date(`${day.value}T00:00:00Z`);
      try {
        const found = await scheduling.findSlots({
          unit: state.unit,
          patient: patientName(),
          visitType: visitType.value,
          window: create(IntervalSchema, {
            startTime: timestampFromDate(new Date(start.getTime() - 14 * 3600_000)),
            endTime: timestampFromDate(new Date(start.getTime() + 38 * 3600_000)),
          }),
          maxSlots: 50,
        });
        const zone = await zoneOf(found.slots[0]?.location ?? "");
        const inDay = found.slots.filter((s) => s.interval?.startTime && zoneDay(timestampDate(s.interval.startTime), zone) === day.value);
        say(status, `${inDay.length} slots (times in ${zone}); ${found.exclusions.length} exclusions`);
        slots.replaceChildren(...inDay.map((s) => slotItem(s, zone, patientName(), visitType.value, status, calendar)));
        exclusions.replaceChildren(...found.exclusions.map((x) => exclusionItem(x, zone)));
      } catch (err) {
        say(status, describe(err), true);
      }
    })();
  });
}

function exclusionItem(x: Exclusion, zone: string): HTMLLIElement {
  const who =
    x.subject === ExclusionSubject.PATIENT ? "This search" : short(x.provider) || "A provider";
  const when =
    x.subject === ExclusionSubject.CANDIDATE && x.startTime ? ` at ${clock(timestampDate(x.startTime), zone)}` : "";
  return h("li", { "data-reason": x.reason }, `${who}${when}: ${exclusionSentence(x.reason, x.requirement)}`);
}

function slotItem(s: Slot, zone: string, patient: string, visitType: string, status: HTMLElement, calendar: HTMLElement) {
  const start = s.interval?.startTime ? timestampDate(s.interval.startTime) : new Date(0);
  const end = s.interval?.endTime ? timestampDate(s.interval.endTime) : new Date(0);
  const label = `${clock(start, zone)}–${clock(end, zone)} ${short(s.provider)} at ${short(s.location)}${s.room ? `, room ${short(s.room)}` : ""}`;
  const book = h("button", { type: "button", class: "book", "aria-label": `Book ${label}` }, "Book");
  book.addEventListener("click", () => {
    void (async () => {
      say(status, "Booking…");
      try {
        await scheduling.bookAppointment({
          parent: state.org,
          appointment: create(AppointmentSchema, {
            unit: state.unit,
            patient,
            provider: s.provider,
            location: s.location,
            room: s.room,
            visitType,
            interval: s.interval,
            payer: s.payer,
          }),
          requestId: crypto.randomUUID(),
        });
        say(status, `Booked ${label}.`);
        await refreshEntries(calendar, false);
      } catch (err) {
        say(status, describe(err), true);
      }
    })();
  });
  return h("li", { class: "slot" }, `${label} `, book);
}

if (state.token) void mainScreen();
else signInScreen();
