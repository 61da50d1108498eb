//! Baseline status from per-namespace outcomes: counts, a bounded problem list and conditions
//! that do not flap. Pure functions; the writer task lives in the controller.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::api::{ActiveExemption, Mode, Problem, SecurityBaselineStatus};
use crate::core::outcomes::Outcomes;

/// At most this many problems are listed in status; the counts cover the rest.
pub const MAX_PROBLEMS: usize = 50;

/// The state of one namespace for one baseline, worst first (`audit` prints it in lower case).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NsState {
    Failed,
    Bypassed,
    Conflicted,
    Drifted,
    Exempted,
    Compliant,
}

impl NsState {
    /// Compliant and exempted (an accepted, time-boxed exception) comply; nothing else does.
    pub fn complies(self) -> bool {
        matches!(self, Self::Compliant | Self::Exempted)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Failed => "failed",
            Self::Bypassed => "bypassed",
            Self::Conflicted => "conflicted",
            Self::Drifted => "drifted",
            Self::Exempted => "exempted",
            Self::Compliant => "compliant",
        }
    }
}

/// The result of reconciling one namespace, as far as one baseline is concerned.
#[derive(Clone, Debug, PartialEq)]
pub struct NsOutcome {
    pub state: NsState,
    pub problems: Vec<Problem>,
    pub exemption: Option<ActiveExemption>,
    /// Risks that leave the namespace compliant (HostNetworkAllowed).
    pub warnings: Vec<Problem>,
    /// The baseline generation this outcome was computed against.
    pub generation: Option<i64>,
    /// The objects the baseline wants here and gets as it wants them (the report's results).
    /// Shared: every namespace of a baseline usually wants the same keys.
    pub wanted: std::sync::Arc<Vec<crate::core::desired::ObjectKey>>,
}

impl NsOutcome {
    /// The state implied by the problems found (the worst one wins).
    pub fn from_problems(problems: Vec<Problem>, exemption: Option<ActiveExemption>) -> Self {
        let state = problems
            .iter()
            .map(|p| match p.reason.as_str() {
                "Conflict" => NsState::Conflicted,
                "Drift" => NsState::Drifted,
                "Bypassed" | "HostNetworkPod" => NsState::Bypassed,
                _ => NsState::Failed,
            })
            .min()
            .unwrap_or(if exemption.is_some() {
                NsState::Exempted
            } else {
                NsState::Compliant
            });
        Self {
            state,
            problems,
            exemption,
            warnings: Vec::new(),
            generation: None,
            wanted: Default::default(),
        }
    }
}

/// Everything the status is computed from.
pub struct StatusInput<'a> {
    pub generation: Option<i64>,
    pub mode: Mode,
    pub invalid: Option<&'a str>,
    pub outcomes: Option<&'a Outcomes>,
    pub repairs: i64,
    pub last_repair_time: Option<Time>,
    /// Namespaces the current generation may still change (selected now, or before, and not yet
    /// reconciled against it). While any is left, the status does not claim that generation.
    pub unsettled: usize,
    /// The families its metadata NetworkPolicy is rendered for (None without metadataEgress).
    pub ip_families: Option<crate::core::families::Rendered>,
    /// The engine the metadata policy is written for (None without metadataEgress).
    pub engine: Option<crate::core::engine::Resolution>,
    /// Namespaces that left the baseline since the status was last written.
    pub departed: &'a [crate::api::Departure],
}

/// How many departures a status keeps.
pub const MAX_DEPARTURES: usize = 20;

/// The status a baseline should have. `previous` keeps `lastTransitionTime` of conditions whose
/// status did not change, so a recomputed status equals the stored one when nothing changed.
pub fn compute(
    input: &StatusInput,
    previous: Option<&SecurityBaselineStatus>,
    now: Timestamp,
) -> SecurityBaselineStatus {
    // Kept current as outcomes change: this costs what the status lists, not a walk over
    // every namespace.
    let (counts, problems, warnings, exemptions) = match input.outcomes {
        Some(o) => (
            o.counts().clone(),
            o.first_problems(MAX_PROBLEMS),
            o.first_warnings(MAX_PROBLEMS),
            o.exemptions(),
        ),
        None => Default::default(),
    };

    // observedGeneration advances only once every namespace has been reconciled against the
    // current spec (GitOps health checks read observedGeneration == generation and Ready).
    let settled = input.invalid.is_some() || input.unsettled == 0;
    let generation = if settled {
        input.generation
    } else {
        previous.and_then(|p| p.observed_generation)
    };
    let cond = |type_: &str, ok: bool, reason: &str, message: String| {
        condition(type_, ok, reason, message, generation, previous, now)
    };
    let conditions = match input.invalid {
        Some(message) => vec![
            cond(
                "Ready",
                false,
                "InvalidSpec",
                format!("the baseline cannot be applied: {message}"),
            ),
            cond(
                "Degraded",
                false,
                "InvalidSpec",
                "nothing is applied while the spec is invalid".into(),
            ),
            cond(
                "Conflict",
                false,
                "InvalidSpec",
                "nothing is applied while the spec is invalid".into(),
            ),
            cond("Invalid", true, "InvalidSpec", message.to_string()),
        ],
        None => {
            let unready = counts.selected - counts.compliant - counts.exempted;
            let ready_reason = match (unready, input.mode) {
                (0, Mode::Enforce) => "Compliant",
                (0, Mode::Audit) => "NoDrift",
                (_, _) if counts.bypassed > 0 => "Bypassed",
                (_, Mode::Audit) => "DriftDetected",
                (_, Mode::Enforce) if counts.failed + counts.conflicted > 0 => "NotCompliant",
                _ => "Reconciling",
            };
            let (ready, ready_reason) = if settled {
                (unready == 0, ready_reason)
            } else {
                (false, "Progressing")
            };
            let progress = if settled {
                String::new()
            } else {
                format!(
                    "generation {} is being applied, {} namespaces left; ",
                    input.generation.unwrap_or_default(),
                    input.unsettled
                )
            };
            vec![
                cond(
                    "Ready",
                    ready,
                    ready_reason,
                    format!(
                        "{progress}{} of {} selected namespaces compliant, {} exempted, {} bypassed",
                        counts.compliant, counts.selected, counts.exempted, counts.bypassed
                    ),
                ),
                cond(
                    "Degraded",
                    counts.failed > 0,
                    if counts.failed > 0 { "ApplyFailed" } else { "AllApplied" },
                    format!("{} namespaces have objects that could not be applied", counts.failed),
                ),
                cond(
                    "Conflict",
                    counts.conflicted > 0,
                    if counts.conflicted > 0 {
                        "OlderBaselineWins"
                    } else {
                        "NoConflict"
                    },
                    format!(
                        "{} namespaces have objects an older baseline wants differently",
                        counts.conflicted
                    ),
                ),
                cond("Invalid", false, "Valid", "the spec is valid".into()),
            ]
        }
    };
    let mut conditions = conditions;
    if let Some(engine) = &input.engine {
        // True is the abnormal state, as for Degraded and Conflict: the object written may be
        // one that nothing enforces.
        conditions.push(match &engine.disagreement {
            Some(why) => cond("EngineUncertain", true, "EvidenceDisagrees", why.clone()),
            None => cond("EngineUncertain", false, "EngineKnown", engine.reason.clone()),
        });
    }
    SecurityBaselineStatus {
        observed_generation: generation,
        conditions,
        namespaces: counts,
        repairs: input.repairs,
        last_repair_time: input.last_repair_time.clone(),
        active_exemptions: exemptions,
        problems,
        warnings,
        ip_families: input.ip_families.clone().map(|r| crate::api::RenderedFamilies {
            families: r.families,
            reason: r.reason,
        }),
        departures: departures(input.departed, previous),
        engine: input.engine.as_ref().map(|r| crate::api::EngineStatus {
            engine: r.engine,
            reason: r.reason.clone(),
        }),
    }
}

/// The newest departures: those since the last write, then those the status already lists.
fn departures(
    departed: &[crate::api::Departure],
    previous: Option<&SecurityBaselineStatus>,
) -> Vec<crate::api::Departure> {
    let mut all: Vec<crate::api::Departure> = departed.iter().rev().cloned().collect();
    all.extend(previous.iter().flat_map(|p| p.departures.iter().cloned()));
    all.truncate(MAX_DEPARTURES);
    all
}

fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    previous: Option<&SecurityBaselineStatus>,
    now: Timestamp,
) -> Condition {
    let status = if ok { "True" } else { "False" };
    let last_transition_time = previous
        .and_then(|p| p.conditions.iter().find(|c| c.type_ == type_))
        .filter(|c| c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::NamespaceCounts;

    fn problem(ns: &str, reason: &str) -> Problem {
        Problem {
            namespace: ns.into(),
            object: "RoleBinding/x".into(),
            reason: reason.into(),
            message: String::new(),
        }
    }

    fn input(outcomes: &Outcomes) -> StatusInput<'_> {
        StatusInput {
            generation: Some(2),
            mode: Mode::Enforce,
            invalid: None,
            outcomes: Some(outcomes),
            repairs: 0,
            last_repair_time: None,
            unsettled: 0,
            ip_families: None,
            engine: None,
            departed: &[],
        }
    }

    fn get<'a>(s: &'a SecurityBaselineStatus, t: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn worst_problem_decides_the_namespace_state() {
        let o = NsOutcome::from_problems(vec![problem("a", "Drift"), problem("a", "Forbidden")], None);
        assert_eq!(o.state, NsState::Failed);
        assert_eq!(NsOutcome::from_problems(vec![], None).state, NsState::Compliant);
        assert_eq!(
            NsOutcome::from_problems(vec![problem("a", "Conflict")], None).state,
            NsState::Conflicted
        );
    }

    #[test]
    fn counts_and_conditions_reflect_outcomes() {
        let outcomes: Outcomes = [
            ("a".to_string(), NsOutcome::from_problems(vec![], None)),
            (
                "b".to_string(),
                NsOutcome::from_problems(vec![problem("b", "Forbidden")], None),
            ),
            (
                "c".to_string(),
                NsOutcome::from_problems(vec![problem("c", "Conflict")], None),
            ),
        ]
        .into();
        let s = compute(&input(&outcomes), None, Timestamp::UNIX_EPOCH);
        assert_eq!(
            s.namespaces,
            NamespaceCounts {
                selected: 3,
                compliant: 1,
                failed: 1,
                conflicted: 1,
                ..Default::default()
            }
        );
        assert_eq!(get(&s, "Ready").status, "False");
        assert_eq!(get(&s, "Degraded").status, "True");
        assert_eq!(get(&s, "Conflict").status, "True");
        assert_eq!(get(&s, "Invalid").status, "False");
        assert_eq!(s.problems.len(), 2);
        assert_eq!(s.observed_generation, Some(2));
    }

    #[test]
    fn a_generation_still_being_applied_is_not_claimed() {
        let outcomes: Outcomes = [("a".to_string(), NsOutcome::from_problems(vec![], None))].into();
        let done = compute(&input(&outcomes), None, Timestamp::UNIX_EPOCH);
        assert_eq!(
            (done.observed_generation, get(&done, "Ready").status.as_str()),
            (Some(2), "True")
        );
        let next = StatusInput {
            generation: Some(3),
            unsettled: 5,
            ..input(&outcomes)
        };
        let s = compute(&next, Some(&done), Timestamp::UNIX_EPOCH);
        assert_eq!(s.observed_generation, Some(2), "still generation 2");
        let ready = get(&s, "Ready");
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "Progressing"));
        assert!(ready.message.contains("5 namespaces left"), "{}", ready.message);
        let settled = StatusInput {
            generation: Some(3),
            ..input(&outcomes)
        };
        assert_eq!(
            compute(&settled, Some(&s), Timestamp::UNIX_EPOCH).observed_generation,
            Some(3)
        );
    }

    #[test]
    fn conditions_keep_their_transition_time_while_status_holds() {
        let outcomes: Outcomes = [("a".to_string(), NsOutcome::from_problems(vec![], None))].into();
        let first = compute(&input(&outcomes), None, Timestamp::from_second(10).unwrap());
        let again = compute(&input(&outcomes), Some(&first), Timestamp::from_second(99).unwrap());
        assert_eq!(
            first, again,
            "an unchanged status must compare equal so it is not rewritten"
        );

        let broken: Outcomes = [(
            "a".to_string(),
            NsOutcome::from_problems(vec![problem("a", "Forbidden")], None),
        )]
        .into();
        let changed = compute(&input(&broken), Some(&first), Timestamp::from_second(99).unwrap());
        assert_eq!(
            get(&changed, "Ready").last_transition_time.0,
            Timestamp::from_second(99).unwrap()
        );
        assert_eq!(
            get(&changed, "Invalid").last_transition_time.0,
            Timestamp::from_second(10).unwrap()
        );
    }

    #[test]
    fn problem_list_is_bounded_and_sorted() {
        let outcomes: Outcomes = (0..200)
            .map(|i| {
                (
                    format!("ns-{i:03}"),
                    NsOutcome::from_problems(vec![problem(&format!("ns-{i:03}"), "Drift")], None),
                )
            })
            .collect();
        let s = compute(
            &StatusInput {
                mode: Mode::Audit,
                ..input(&outcomes)
            },
            None,
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(s.problems.len(), MAX_PROBLEMS);
        assert_eq!(s.problems[0].namespace, "ns-000");
        assert_eq!(s.namespaces.drifted, 200);
        assert_eq!(get(&s, "Ready").reason, "DriftDetected");
    }

    #[test]
    fn invalid_spec_sets_invalid_and_not_ready() {
        let s = compute(
            &StatusInput {
                invalid: Some("namespaceSelector: bad"),
                outcomes: None,
                ..input(&Outcomes::default())
            },
            None,
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(get(&s, "Invalid").status, "True");
        assert_eq!(get(&s, "Ready").status, "False");
        assert!(get(&s, "Invalid").message.contains("namespaceSelector"));
    }
}
