// The calendar page in headless Chromium (the system's, through puppeteer-core: no download).
// Run by tests/web_page.rs against a mesh with the demo seeded:
//   node web/test/page.mjs <edge url> <chromium path> <monday YYYY-MM-DD>
// Exits non-zero with the failing step on stderr.
import puppeteer from "puppeteer-core";

const [url, chromium, monday] = process.argv.slice(2);
if (!url || !chromium || !monday) {
  console.error("usage: page.mjs <edge url> <chromium> <YYYY-MM-DD>");
  process.exit(2);
}
const ORG = "organizations/acme";
const CCM = `${ORG}/units/ccm-program`;
const ENROLLMENT = `${CCM}/visitTypes/ccm-enrollment`;

function check(cond, what) {
  if (!cond) throw new Error(`FAILED: ${what}`);
  console.log(`ok: ${what}`);
}

const browser = await puppeteer.launch({
  executablePath: chromium,
  headless: true,
  acceptInsecureCerts: true,
  args: ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
});
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(15000);
  const pageErrors = [];
  page.on("pageerror", (err) => pageErrors.push(String(err)));

  async function signInAs(principal, page) {
    await page.goto(url, { waitUntil: "load" });
    await page.evaluate(() => sessionStorage.clear());
    await page.goto(url, { waitUntil: "load" });
    await page.waitForSelector(`button[data-principal="${principal}"]`);
    // Every control of the sign-in screen is labelled.
    const unlabelled = await page.$$eval("input, select", (els) =>
      els.filter((el) => !el.id || !document.querySelector(`label[for="${el.id}"]`)).map((el) => el.outerHTML),
    );
    check(unlabelled.length === 0, `sign-in controls are labelled (${unlabelled.join(" ")})`);
    // Keyboard: the first principal has the focus; Tab reaches the one wanted, Enter signs in.
    await page.focus(`button[data-principal="${principal}"]`);
    await page.keyboard.press("Enter");
    await page.waitForSelector("#units button[data-unit]");
    return page.$$eval("#units button[data-unit]", (bs) => bs.map((b) => b.getAttribute("data-unit")));
  }

  // The admin sees every unit of the organization.
  const adminUnits = await signInAs("principals/admin", page);
  check(adminUnits.length >= 4 && adminUnits.includes(CCM), `admin sees every unit (${adminUnits.length})`);

  // The CCM program manager sees only the CCM program.
  const caseyUnits = await signInAs("principals/casey-ccm", page);
  check(
    caseyUnits.length > 0 && caseyUnits.every((u) => u === CCM || u.startsWith(`${CCM}-`)) && caseyUnits.includes(CCM),
    `casey-ccm sees only the CCM program (${caseyUnits.join(", ")})`,
  );
  check(caseyUnits.length < adminUnits.length, "casey-ccm sees fewer units than the admin");

  // Choose the unit with the keyboard (focus, Enter) and the day.
  async function showDay(page) {
    await page.focus(`#units button[data-unit="${CCM}"]`);
    await page.keyboard.press("Enter");
    await page.waitForSelector("#day");
    await page.waitForFunction(() => /entries|Nothing/.test(document.querySelector("#calendar-status")?.textContent ?? ""));
    await page.$eval("#day", (el, v) => {
      el.value = v;
      el.dispatchEvent(new Event("change"));
    }, monday);
    await page.waitForFunction(() => /entries|Nothing/.test(document.querySelector("#calendar-status")?.textContent ?? ""));
  }
  await showDay(page);
  const zone = await page.$eval("#zone", (el) => el.textContent);
  check(/Times in [A-Za-z_]+\/[A-Za-z_]+|Times in UTC/.test(zone ?? ""), `the calendar names its zone (${zone})`);
  check(zone === "Times in America/New_York", "the zone is the location's (America/New_York)");
  const free = await page.$$eval("#entries li[data-kind=free]", (lis) => lis.length);
  check(free > 0, `free time is on the calendar (${free})`);

  // Slot search for Harold (p-0001): he is at another pathway step; the exclusion is in words.
  await page.waitForFunction(
    (v) => [...document.querySelectorAll("#visit-type option")].some((o) => o.value === v),
    {},
    ENROLLMENT,
  );
  await page.select("#visit-type", ENROLLMENT);
  await page.$eval("#search-day", (el, v) => { el.value = v; }, monday);
  await page.type("#patient", "p-0001");
  await page.keyboard.press("Enter");
  await page.waitForFunction(() => /exclusions/.test(document.querySelector("#search-status")?.textContent ?? ""));
  const exclusions = await page.$$eval("#exclusions li", (lis) => lis.map((li) => [li.dataset.reason, li.textContent]));
  console.log(exclusions);
  check(
    exclusions.some(([r, t]) => r === "WRONG_PATHWAY_STEP" && t.includes("different step of the care pathway")),
    "WRONG_PATHWAY_STEP is listed in words",
  );
  check(exclusions.every(([r, t]) => !t.includes(r) && !t.includes("Excluded (")), "every exclusion is in words");

  // Rosa (p-0004): slots; book the first, it appears on the calendar.
  await page.$eval("#patient", (el) => { el.value = ""; });
  await page.type("#patient", "p-0004");
  await page.click("#find");
  await page.waitForSelector("#slots li.slot button.book");
  const slots = await page.$$eval("#slots li.slot", (lis) => lis.map((li) => li.textContent));
  check(slots.length > 0, `slots are listed (${slots.length}, first: ${slots[0]})`);
  const first = (slots[0] ?? "").replace(/ ?Book$/, "");
  const start = first.slice(0, 5);

  // A second browser session (its own context: another person) shows the same day, live.
  const other = await (await browser.createBrowserContext()).newPage();
  other.setDefaultTimeout(15000);
  other.on("pageerror", (err) => pageErrors.push(String(err)));
  await signInAs("principals/admin", other);
  await showDay(other);
  const seenBefore = await other.$$eval("#entries li", (lis, s) => lis.some((li) => li.textContent.startsWith(s) && li.textContent.includes("p-0004")), start);
  check(!seenBefore, "the second session does not show the booking yet");
  // Let its WatchCalendar stream open before booking.
  await new Promise((resolve) => setTimeout(resolve, 500));
  await page.focus("#slots li.slot button.book");
  await page.keyboard.press("Enter");
  await page.waitForFunction(() => /^Booked/.test(document.querySelector("#search-status")?.textContent ?? ""));
  await page.waitForFunction(
    (s) => [...document.querySelectorAll("#entries li[data-kind=hold], #entries li[data-kind=appointment]")].some((li) => li.textContent.startsWith(s) && li.textContent.includes("p-0004")),
    {},
    start,
  );
  check(true, `the booking (${first}) is on the calendar`);
  const booked = Date.now();
  await other.waitForFunction(
    (s) => [...document.querySelectorAll("#entries li[data-kind=hold], #entries li[data-kind=appointment]")].some((li) => li.textContent.startsWith(s) && li.textContent.includes("p-0004")),
    { timeout: 5000, polling: 20 },
    start,
  );
  const delay = Date.now() - booked;
  check(true, `the booking appears live in the second session (WatchCalendar) after ${delay} ms`);

  // The same slot again (the list is now stale): SLOT_UNAVAILABLE's sentence.
  await page.click("#slots li.slot button.book");
  await page.waitForFunction(() => document.querySelector("#search-status")?.className === "error");
  const refusal = await page.$eval("#search-status", (el) => el.textContent);
  check(refusal?.startsWith("That time was just taken"), `a taken slot is refused in words (${refusal})`);

  // Every control of the main screen is labelled.
  const unlabelled = await page.$$eval("input, select", (els) =>
    els.filter((el) => !el.id || !document.querySelector(`label[for="${el.id}"]`)).map((el) => el.outerHTML),
  );
  check(unlabelled.length === 0, `main-screen controls are labelled (${unlabelled.join(" ")})`);
  check(pageErrors.length === 0, `no script errors (${pageErrors.join("; ")})`);
} finally {
  await browser.close();
}
