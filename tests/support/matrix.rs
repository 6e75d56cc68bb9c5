//! What the authorization matrices share (tests/authz_matrix.rs for Org and RBAC,
//! tests/authz_matrix_scheduling.rs for Scheduling): the cases a call is made in and what the policy
//! table (`pm_authz::policy::role_grants`) expects of it, how an answer is classified, judged and
//! counted, the role-by-role run that prints a table and the counts of each role, and the sweep of
//! every RPC without a token and as a principal without bindings. What each RPC is called with (the
//! probe tables) stays with each service's matrix.

#![allow(dead_code)]

use pm_api::MethodRule;
use pm_api::rbac::{
    CreatePrincipalRequest, CreateRoleBindingRequest, Principal, PrincipalKind, RoleBinding,
};
use pm_authz::policy::{Role, role_grants};
use tonic::{Code, Status};

use super::TestMesh;

/// A principal with no role binding anywhere.
pub const NOBODY: &str = "principals/nobody";
/// An etag no seeded resource has: an allowed Update, Delete or verb answers ABORTED and changes
/// nothing.
pub const STALE: &str = "r999";

/// A principal, and optionally an Organization Administrator binding for it in `organization`
/// (through the dev bootstrap).
pub async fn principal(
    mesh: &TestMesh,
    principal: &str,
    admin_of: Option<&str>,
) -> anyhow::Result<()> {
    let id = principal.trim_start_matches("principals/");
    let mut rbac = mesh.rbac()?;
    rbac.create_principal(CreatePrincipalRequest {
        principal: Some(Principal {
            display_name: format!("matrix {id}"),
            kind: PrincipalKind::User as i32,
            ..Default::default()
        }),
        principal_id: id.into(),
        request_id: String::new(),
    })
    .await?;
    if let Some(organization) = admin_of {
        rbac.create_role_binding(CreateRoleBindingRequest {
            parent: organization.into(),
            role_binding: Some(RoleBinding {
                principal: principal.into(),
                role: pm_api::rbac::Role::OrganizationAdministrator as i32,
                reason: "authorization matrix".into(),
                ..Default::default()
            }),
            role_binding_id: id.into(),
            request_id: String::new(),
        })
        .await?;
    }
    Ok(())
}

/// The RPCs of `service` (e.g. `/pm.org.v1.OrgService/`) in the descriptor set, by short name;
/// `label` names the service when there is none.
pub fn methods_of(service: &str, label: &str) -> Vec<(&'static str, &'static MethodRule)> {
    let methods: Vec<_> = pm_api::RULES
        .iter()
        .filter_map(|rule| rule.method.strip_prefix(service).map(|m| (m, rule)))
        .collect();
    assert!(!methods.is_empty(), "no {label} RPC in pm_api::RULES");
    methods
}

/// Whether `method` starts with one of `reads`, the prefixes of a service's RPCs that only read.
pub fn is_read(method: &str, reads: &[&str]) -> bool {
    reads.iter().any(|p| method.starts_with(p))
}

// The cases and what the policy table expects of them.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    InScope,
    OutOfScope,
    Missing,
}

pub const CASES: [Case; 3] = [Case::InScope, Case::OutOfScope, Case::Missing];

/// Where the resource the object-level check runs on sits, which decides who may reach it (each
/// matrix says which of its service's resources sit where).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// An organization, as itself or as the parent of a collection or of a List narrowed to the
    /// caller's units: its missing case is an organization nobody is bound in.
    Organization,
    /// Something every role of the organization may reach (and learn whether it exists): a missing
    /// one is NOT_FOUND or empty for whoever holds the permission.
    OrganizationWide,
    /// Something in a unit: unit-scoped roles reach it through their units; a missing one sits in no
    /// unit, so only the organization's administrator reaches it (and is told NOT_FOUND or the
    /// like).
    Unit,
    /// No resource (`resource_field` is empty): a mesh-wide call the rule opens to services only. A
    /// person's binding, which is in one organization, cannot cover it.
    Mesh,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Allow,
    Deny,
    /// Allowed, about a resource that does not exist (NOT_FOUND or a validation error): reveals
    /// only what the caller may know anyway.
    Harmless,
}

/// What the policy table expects of `role` calling an RPC of `permission` on the resource of `case`
/// at `level`. `outside_in_organization`: the role's out-of-scope resources are in its own
/// organization (a unit-scoped role's other units), where the organization-wide ones are in reach.
pub fn expect(
    role: Role,
    permission: &str,
    case: Case,
    level: Level,
    outside_in_organization: bool,
) -> Expect {
    if !role_grants(role, permission) {
        return Expect::Deny;
    }
    match (case, level) {
        (_, Level::Mesh) => Expect::Deny,
        (Case::InScope, _) => Expect::Allow,
        (Case::OutOfScope, Level::OrganizationWide) if outside_in_organization => Expect::Allow,
        (Case::OutOfScope, _) => Expect::Deny,
        (Case::Missing, Level::Organization) => Expect::Deny,
        (Case::Missing, Level::OrganizationWide) => Expect::Harmless,
        (Case::Missing, Level::Unit) if role == Role::OrganizationAdministrator => Expect::Harmless,
        (Case::Missing, Level::Unit) => Expect::Deny,
    }
}

// What a call answered, and whether that is what the policy expects.

/// What a call answered: `Some(names)` for a List (or a stream) whose content is checked.
pub type Reply = Result<Option<Vec<String>>, Status>;

/// A reply whose content is not checked.
pub fn one<T>(reply: Result<tonic::Response<T>, Status>) -> Reply {
    reply.map(|_| None)
}

/// A reply whose content is checked: the `names` it holds.
pub fn many<T>(
    reply: Result<tonic::Response<T>, Status>,
    names: impl FnOnce(T) -> Vec<String>,
) -> Reply {
    reply.map(|r| Some(names(r.into_inner())))
}

/// The status code of a reply (OK for an answer).
pub fn code_of(reply: &Reply) -> Code {
    reply.as_ref().err().map_or(Code::Ok, Status::code)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Denied,
    Unauthenticated,
    /// A List that answered OK with nothing in it: reveals nothing, so it satisfies a denial too.
    Empty,
    Allowed(Code),
}

pub fn classify(reply: &Reply) -> Outcome {
    match reply {
        Err(status) if status.code() == Code::PermissionDenied => Outcome::Denied,
        Err(status) if status.code() == Code::Unauthenticated => Outcome::Unauthenticated,
        Err(status) => Outcome::Allowed(status.code()),
        Ok(Some(items)) if items.is_empty() => Outcome::Empty,
        Ok(_) => Outcome::Allowed(Code::Ok),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Expected,
    UnexpectedAllow,
    UnexpectedDenial,
}

pub fn judge(expected: Expect, outcome: Outcome) -> Verdict {
    match (expected, outcome) {
        (_, Outcome::Unauthenticated) => Verdict::UnexpectedDenial,
        (Expect::Deny, Outcome::Allowed(_)) => Verdict::UnexpectedAllow,
        (Expect::Deny, Outcome::Denied | Outcome::Empty) => Verdict::Expected,
        (Expect::Allow | Expect::Harmless, Outcome::Denied) => Verdict::UnexpectedDenial,
        (Expect::Allow | Expect::Harmless, Outcome::Allowed(_) | Outcome::Empty) => {
            Verdict::Expected
        }
    }
}

/// Why a reply is unexpected: what was expected, and the code and message answered.
pub fn detail_of(expected: Expect, reply: &Reply) -> String {
    match reply {
        Ok(_) => format!("expected {expected:?}, got OK"),
        Err(s) => format!("expected {expected:?}, got {:?}: {}", s.code(), s.message()),
    }
}

/// Like [`detail_of`], with the names a checked reply holds.
pub fn detail_with_items(expected: Expect, reply: &Reply) -> String {
    match reply {
        Ok(Some(items)) => format!("expected {expected:?}, got OK with {items:?}"),
        _ => detail_of(expected, reply),
    }
}

/// A scoped List that returned more than `expected` (what the role's scope holds) is an unexpected
/// allow; less, an unexpected denial. `None` for `expected`: the matrix has no expectation for it.
pub fn check_scoped_list(
    expected: Option<Vec<String>>,
    items: &[String],
) -> Option<(Verdict, String)> {
    let Some(expected) = expected else {
        return Some((
            Verdict::UnexpectedAllow,
            format!("returned {items:?}, but the matrix has no scoped-list expectation for it"),
        ));
    };
    let extra: Vec<&String> = items.iter().filter(|n| !expected.contains(n)).collect();
    let lacking: Vec<&String> = expected.iter().filter(|n| !items.contains(n)).collect();
    if !extra.is_empty() {
        Some((
            Verdict::UnexpectedAllow,
            format!("returned out-of-scope {extra:?}"),
        ))
    } else if !lacking.is_empty() {
        Some((
            Verdict::UnexpectedDenial,
            format!("did not return in-scope {lacking:?}"),
        ))
    } else {
        None
    }
}

// Counting and printing.

#[derive(Default)]
pub struct Tally {
    pub calls: usize,
    pub allowed: usize,
    pub denied: usize,
    pub harmless: usize,
    pub unexpected_allows: usize,
    pub unexpected_denials: usize,
}

impl Tally {
    pub fn add(&mut self, expected: Expect, verdict: Verdict) {
        self.calls += 1;
        match verdict {
            Verdict::UnexpectedAllow => self.unexpected_allows += 1,
            Verdict::UnexpectedDenial => self.unexpected_denials += 1,
            Verdict::Expected if expected == Expect::Deny => self.denied += 1,
            Verdict::Expected => {
                self.allowed += 1;
                if expected == Expect::Harmless {
                    self.harmless += 1;
                }
            }
        }
    }

    pub fn merge(&mut self, other: &Tally) {
        self.calls += other.calls;
        self.allowed += other.allowed;
        self.denied += other.denied;
        self.harmless += other.harmless;
        self.unexpected_allows += other.unexpected_allows;
        self.unexpected_denials += other.unexpected_denials;
    }

    /// `N calls, N allowed, N denied, N unexpected allows, N unexpected denials`.
    pub fn summary(&self) -> String {
        format!(
            "{} calls, {} allowed, {} denied, {} unexpected allows, {} unexpected denials",
            self.calls, self.allowed, self.denied, self.unexpected_allows, self.unexpected_denials
        )
    }
}

/// A cell of a role's table: the outcome, marked when unexpected.
pub fn cell(outcome: Outcome, verdict: Verdict) -> String {
    let text = match outcome {
        Outcome::Denied => "denied".to_string(),
        Outcome::Unauthenticated => "UNAUTHENTICATED".to_string(),
        Outcome::Empty => "empty".to_string(),
        Outcome::Allowed(code) => format!("{code:?}"),
    };
    match verdict {
        Verdict::Expected => text,
        Verdict::UnexpectedAllow => format!("!!ALLOW {text}"),
        Verdict::UnexpectedDenial => format!("!!DENY {text}"),
    }
}

/// The header of a role's table.
pub const HEADER: [&str; 5] = [
    "method",
    "permission",
    "in scope",
    "out of scope",
    "nonexistent",
];

/// A line of a role's table (method, permission, the three cases), in columns `widths` wide
/// (method, permission, each case).
pub fn row(widths: [usize; 3], cells: [&str; 5]) -> String {
    let [method, permission, case] = widths;
    format!(
        "  {:<method$} {:<permission$} {:<case$} {:<case$} {:<case$}",
        cells[0], cells[1], cells[2], cells[3], cells[4]
    )
}

// The role-by-role run.

/// One role's side of a service's matrix: who it is, and how each RPC is called for it.
pub trait RoleFixture {
    /// The service's client, as one caller.
    type Client;
    /// The widths of the columns of a role's table: method, permission, each case.
    const WIDTHS: [usize; 3];
    /// The prefixes of the service's RPCs that only read: any other that answers OK changed state.
    const READS: &'static [&'static str];

    /// The role's principal, the role, and its scope as printed.
    fn who(&self) -> (&'static str, Role, &'static str);

    /// The cases an RPC is called in: all three unless the service says otherwise.
    fn cases(_rule: &MethodRule) -> &'static [Case] {
        &CASES
    }

    /// Calls `method` on the resource of `case` for this role, returning the level of the resource
    /// the object-level check runs on and the reply. Fails on a method without an entry: a new RPC
    /// cannot skip the matrix.
    async fn probe(
        &self,
        client: &mut Self::Client,
        method: &str,
        case: Case,
    ) -> anyhow::Result<(Level, Reply)>;

    /// What the policy table expects of this role calling an RPC of `permission` in `case`.
    fn expect(&self, permission: &str, case: Case, level: Level) -> Expect;

    /// What a scoped List must return in scope, exactly (`None`: no expectation for `method`).
    fn expected_list(&self, method: &str) -> Option<Vec<String>>;

    /// Why a reply is unexpected.
    fn detail(expected: Expect, reply: &Reply) -> String {
        detail_of(expected, reply)
    }
}

/// What a run found, across roles.
#[derive(Default)]
pub struct Findings {
    pub total: Tally,
    /// The unexpected outcomes, one line each.
    pub unexpected: Vec<String>,
    /// The writes that answered OK (the matrix must not change state).
    pub writes_that_succeeded: Vec<String>,
}

impl Findings {
    pub fn print_unexpected(&self) {
        for line in &self.unexpected {
            println!("  {line}");
        }
    }

    /// Fails on a write that answered OK, then on any unexpected outcome.
    pub fn assert_clean(&self) {
        assert!(
            self.writes_that_succeeded.is_empty(),
            "the matrix must not change state; these writes answered OK: {:#?}",
            self.writes_that_succeeded
        );
        assert!(
            self.unexpected.is_empty(),
            "unexpected outcomes: {:#?}",
            self.unexpected
        );
    }
}

/// Every RPC of `methods` in each of its cases, as `fx` through `client`: prints the role's table
/// and counts, and adds them to `findings`. Returns how many calls it made.
pub async fn run_role<F: RoleFixture>(
    client: &mut F::Client,
    fx: &F,
    methods: &[(&str, &MethodRule)],
    findings: &mut Findings,
) -> anyhow::Result<usize> {
    let (principal, role, scope) = fx.who();
    let mut tally = Tally::default();
    let mut calls = 0;
    println!("\n{principal} — {role} ({scope})");
    println!("{}", row(F::WIDTHS, HEADER));
    for (method, rule) in methods {
        let mut cells = Vec::new();
        for case in CASES {
            if !F::cases(rule).contains(&case) {
                cells.push("-".to_string());
                continue;
            }
            calls += 1;
            let (level, reply) = fx.probe(client, method, case).await?;
            let expected = fx.expect(rule.permission, case, level);
            let outcome = classify(&reply);
            let mut verdict = judge(expected, outcome);
            let mut detail = None;
            if let Ok(items) = &reply {
                if !is_read(method, F::READS) {
                    findings
                        .writes_that_succeeded
                        .push(format!("{method} as {principal} ({case:?})"));
                }
                if let (Some(items), Case::InScope, Verdict::Expected) = (items, case, verdict)
                    && let Some((scoped, why)) = check_scoped_list(fx.expected_list(method), items)
                {
                    verdict = scoped;
                    detail = Some(why);
                }
            }
            if verdict != Verdict::Expected {
                let detail = detail.unwrap_or_else(|| F::detail(expected, &reply));
                findings.unexpected.push(format!(
                    "{verdict:?}: {method} as {principal} ({role}), {case:?} ({level:?}): {detail}"
                ));
            }
            tally.add(expected, verdict);
            cells.push(cell(outcome, verdict));
        }
        println!(
            "{}",
            row(
                F::WIDTHS,
                [method, rule.permission, &cells[0], &cells[1], &cells[2]]
            )
        );
    }
    println!(
        "  {principal}: {} calls, {} allowed ({} harmless on nonexistent resources), {} denied, {} unexpected allows, {} unexpected denials",
        tally.calls,
        tally.allowed,
        tally.harmless,
        tally.denied,
        tally.unexpected_allows,
        tally.unexpected_denials
    );
    findings.total.merge(&tally);
    Ok(calls)
}

/// Every RPC of `methods`, as called for `admin` in scope, without a token (through `anonymous`)
/// and as [`NOBODY`] (through `unbound`): the calls that did not answer UNAUTHENTICATED and
/// PERMISSION_DENIED respectively.
pub async fn refusals<F: RoleFixture>(
    anonymous: &mut F::Client,
    unbound: &mut F::Client,
    admin: &F,
    methods: &[(&str, &MethodRule)],
) -> anyhow::Result<Vec<String>> {
    let mut wrong = Vec::new();
    for (method, _) in methods {
        for (caller, client, refusal) in [
            ("no token", &mut *anonymous, Code::Unauthenticated),
            (NOBODY, &mut *unbound, Code::PermissionDenied),
        ] {
            let (_, reply) = admin.probe(client, method, Case::InScope).await?;
            let code = code_of(&reply);
            if code != refusal {
                wrong.push(format!(
                    "{method} as {caller}: {code:?}, expected {refusal:?}"
                ));
            }
        }
    }
    Ok(wrong)
}
