// What the services say, in words a scheduler understands.
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import { Code, type ConnectError } from "@connectrpc/connect";

/** Every Exclusion reason code Scheduling sends (crates/scheduling/src/eligibility.rs), as a sentence. */
export const EXCLUSION_WORDS: Record<string, string> = {
  VISIT_TYPE_NOT_ALLOWED: "This unit does not offer this visit type.",
  PATIENT_NOT_ENROLLED: "The patient is not enrolled in this unit on that day.",
  WRONG_PATHWAY_STEP: "The patient is at a different step of the care pathway than this visit is for.",
  PAYER_NOT_ACCEPTED: "The unit does not accept the patient's insurance.",
  PROVIDER_NOT_CREDENTIALED: "Not credentialed to see patients in this unit at that time.",
  OUTSIDE_AVAILABILITY: "Not working at that time.",
  PROVIDER_BOOKED: "Already booked at that time.",
  PATIENT_BOOKED: "The patient already has an appointment at that time.",
  NO_ROOM_AVAILABLE: "No room is free at the location at that time.",
  INTAKE_REFERRAL_MISSING: "The unit needs a referral for this visit, and the patient has none on file.",
  INTAKE_CONSENT_MISSING: "The unit needs the patient's consent for this visit, and none is on file.",
  PRIOR_AUTH_MISSING: "The unit needs a prior authorization for this visit, and the patient has none on file.",
  INTAKE_CARE_PLAN_MISSING: "The unit needs a care plan for this visit, and the patient has none on file.",
  REFERRAL_EXPIRED: "The patient's referral for this visit has expired.",
  CONSENT_EXPIRED: "The patient's consent for this visit has expired.",
  PRIOR_AUTH_EXPIRED: "The patient's prior authorization for this visit has expired.",
  CARE_PLAN_EXPIRED: "The patient's care plan for this visit has expired.",
  REFERRAL_VISITS_USED: "The patient's referral covers no more visits of this kind: every visit it allows is taken.",
  CONSENT_VISITS_USED: "The patient's consent covers no more visits of this kind: every visit it allows is taken.",
  PRIOR_AUTH_VISITS_USED: "The patient's prior authorization covers no more visits: every visit it allows is taken.",
  CARE_PLAN_VISITS_USED: "The patient's care plan covers no more visits of this kind: every visit it allows is taken.",
};

export function exclusionSentence(reason: string, _requirement: string): string {
  return EXCLUSION_WORDS[reason] ?? `Excluded (${reason || "no reason given"}).`;
}

/** Refusals (the ErrorInfo reason of a failed call) the page can meet, in words. */
export const REFUSAL_WORDS: Record<string, string> = {
  ...EXCLUSION_WORDS,
  SLOT_UNAVAILABLE: "That time was just taken or is no longer bookable: search again and choose another slot.",
  SLOT_IN_THE_PAST: "That time has already passed: choose a later slot.",
  HOLD_EXPIRED: "The hold lapsed before it was confirmed: book the slot again.",
  WRONG_APPOINTMENT_STATE: "The appointment has changed in the meantime: reload the calendar.",
  VISIT_TYPE_NOT_FOUND: "That visit type does not exist in this unit.",
};

/** The google.rpc.ErrorInfo reason (field 1) of a ConnectError's details, if any. */
export function reasonOf(err: ConnectError): string {
  for (const detail of err.details) {
    if (!("type" in detail) || !("value" in detail) || !detail.type.endsWith("google.rpc.ErrorInfo")) continue;
    try {
      const reader = new BinaryReader(detail.value as Uint8Array);
      while (reader.pos < reader.len) {
        const [field, wire] = reader.tag();
        if (field === 1 && wire === WireType.LengthDelimited) return reader.string();
        reader.skip(wire);
      }
    } catch {
      // An undecodable detail: fall back to the code.
    }
  }
  return "";
}

export function refusalSentence(code: Code, reason: string, message: string): string {
  const words = REFUSAL_WORDS[reason];
  if (words) return words;
  switch (code) {
    case Code.Unauthenticated:
      return "Your sign-in has expired: sign in again.";
    case Code.PermissionDenied:
    case Code.NotFound:
      return "That is not in your scope, or it does not exist.";
    case Code.Unavailable:
      return "The service is unreachable: try again in a moment.";
    case Code.InvalidArgument:
      return `The request was refused: ${message}`;
    default:
      return `Refused (${Code[code]}${reason ? `, ${reason}` : ""}): ${message}`;
  }
}
