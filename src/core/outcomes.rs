//! One baseline's outcomes by namespace, and what its status and the cluster report read from
//! them (counts, which namespaces list problems, warnings or an exemption, which generations the
//! outcomes were computed against), kept current on every change. A status pass runs every few
//! hundred milliseconds while thousands of namespaces converge: it then costs what the status
//! lists, not a walk over every namespace (that walk made the operator's CPU per namespace grow
//! with the number of namespaces). Pure.

use std::collections::{BTreeMap, BTreeSet};

use crate::api::{ActiveExemption, NamespaceCounts, Problem};
use crate::core::status::{NsOutcome, NsState};

/// Outcomes by namespace, with their aggregates.
#[derive(Clone, Debug, Default)]
pub struct Outcomes {
    by_namespace: BTreeMap<String, NsOutcome>,
    aggregates: Aggregates,
}

#[derive(Clone, Debug, Default)]
struct Aggregates {
    counts: NamespaceCounts,
    /// (a problem's namespace, the namespace of the outcome listing it), for every problem.
    /// Problems sort by their namespace first, so the first few in order are found here without
    /// looking at the namespaces that list none.
    problems: BTreeSet<(String, String)>,
    /// The same for warnings.
    warnings: BTreeSet<(String, String)>,
    /// (an exemption's namespace, the namespace of the outcome holding it).
    exemptions: BTreeSet<(String, String)>,
    /// The namespaces whose state does not comply.
    not_complying: BTreeSet<String>,
    /// How many outcomes were computed against each baseline generation.
    generations: BTreeMap<Option<i64>, usize>,
}

fn count_of(counts: &mut NamespaceCounts, state: NsState) -> &mut i64 {
    match state {
        NsState::Compliant => &mut counts.compliant,
        NsState::Drifted => &mut counts.drifted,
        NsState::Bypassed => &mut counts.bypassed,
        NsState::Exempted => &mut counts.exempted,
        NsState::Conflicted => &mut counts.conflicted,
        NsState::Failed => &mut counts.failed,
    }
}

/// The (listed namespace, outcome namespace) pairs of `listed`.
fn pairs<'a>(ns: &'a str, listed: &'a [Problem]) -> impl Iterator<Item = (String, String)> + 'a {
    listed.iter().map(move |p| (p.namespace.clone(), ns.to_string()))
}

impl Outcomes {
    pub fn get(&self, ns: &str) -> Option<&NsOutcome> {
        self.by_namespace.get(ns)
    }

    /// Stores the outcome of `ns`; returns the one it replaces.
    pub fn insert(&mut self, ns: String, outcome: NsOutcome) -> Option<NsOutcome> {
        match self.by_namespace.get_mut(&ns) {
            Some(slot) => {
                let previous = std::mem::replace(slot, outcome);
                self.aggregates.subtract(&ns, &previous);
                self.aggregates.add(&ns, slot);
                Some(previous)
            }
            None => {
                self.aggregates.add(&ns, &outcome);
                self.by_namespace.insert(ns, outcome);
                None
            }
        }
    }

    pub fn remove(&mut self, ns: &str) -> Option<NsOutcome> {
        let was = self.by_namespace.remove(ns)?;
        self.aggregates.subtract(ns, &was);
        Some(was)
    }

    /// Keeps the outcomes of the namespaces `keep` says.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        let gone: Vec<String> = self.by_namespace.keys().filter(|ns| !keep(ns)).cloned().collect();
        for ns in gone {
            self.remove(&ns);
        }
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.by_namespace.keys()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &NsOutcome)> {
        self.by_namespace.iter()
    }

    pub fn len(&self) -> usize {
        self.by_namespace.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_namespace.is_empty()
    }

    /// Namespaces by state.
    pub fn counts(&self) -> &NamespaceCounts {
        &self.aggregates.counts
    }

    /// How many outcomes were not computed against `generation`.
    pub fn not_at(&self, generation: Option<i64>) -> usize {
        self.len() - self.aggregates.generations.get(&generation).copied().unwrap_or(0)
    }

    /// The namespaces that do not comply, by name.
    pub fn not_complying(&self) -> impl Iterator<Item = &String> {
        self.aggregates.not_complying.iter()
    }

    /// The first `limit` problems of all outcomes, sorted.
    pub fn first_problems(&self, limit: usize) -> Vec<Problem> {
        self.first(&self.aggregates.problems, |o| &o.problems, limit)
    }

    /// The first `limit` warnings of all outcomes, sorted.
    pub fn first_warnings(&self, limit: usize) -> Vec<Problem> {
        self.first(&self.aggregates.warnings, |o| &o.warnings, limit)
    }

    /// Every exemption in force, by namespace.
    pub fn exemptions(&self) -> Vec<ActiveExemption> {
        self.aggregates
            .exemptions
            .iter()
            .filter_map(|(_, ns)| self.by_namespace.get(ns)?.exemption.clone())
            .collect()
    }

    /// The problems (or warnings) that sort first: those of one listed namespace at a time, in
    /// order, until `limit` are found.
    fn first(
        &self,
        index: &BTreeSet<(String, String)>,
        listed: impl Fn(&NsOutcome) -> &[Problem],
        limit: usize,
    ) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut group: Vec<Problem> = Vec::new();
        let mut current: Option<&str> = None;
        for (namespace, ns) in index {
            if current != Some(namespace.as_str()) {
                group.sort();
                out.append(&mut group);
                if out.len() >= limit {
                    break;
                }
                current = Some(namespace);
            }
            if let Some(o) = self.by_namespace.get(ns) {
                group.extend(listed(o).iter().filter(|p| p.namespace == *namespace).cloned());
            }
        }
        group.sort();
        out.append(&mut group);
        out.truncate(limit);
        out
    }
}

impl Aggregates {
    fn add(&mut self, ns: &str, o: &NsOutcome) {
        self.counts.selected += 1;
        *count_of(&mut self.counts, o.state) += 1;
        self.problems.extend(pairs(ns, &o.problems));
        self.warnings.extend(pairs(ns, &o.warnings));
        if let Some(e) = &o.exemption {
            self.exemptions.insert((e.namespace.clone(), ns.to_string()));
        }
        if !o.state.complies() {
            self.not_complying.insert(ns.to_string());
        }
        *self.generations.entry(o.generation).or_default() += 1;
    }

    fn subtract(&mut self, ns: &str, o: &NsOutcome) {
        self.counts.selected -= 1;
        *count_of(&mut self.counts, o.state) -= 1;
        for pair in pairs(ns, &o.problems) {
            self.problems.remove(&pair);
        }
        for pair in pairs(ns, &o.warnings) {
            self.warnings.remove(&pair);
        }
        if let Some(e) = &o.exemption {
            self.exemptions.remove(&(e.namespace.clone(), ns.to_string()));
        }
        if !o.state.complies() {
            self.not_complying.remove(ns);
        }
        if let Some(n) = self.generations.get_mut(&o.generation) {
            *n -= 1;
            if *n == 0 {
                self.generations.remove(&o.generation);
            }
        }
    }
}

impl FromIterator<(String, NsOutcome)> for Outcomes {
    fn from_iter<I: IntoIterator<Item = (String, NsOutcome)>>(iter: I) -> Self {
        let mut outcomes = Self::default();
        for (ns, o) in iter {
            outcomes.insert(ns, o);
        }
        outcomes
    }
}

impl<const N: usize> From<[(String, NsOutcome); N]> for Outcomes {
    fn from(entries: [(String, NsOutcome); N]) -> Self {
        entries.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;
    use proptest::prelude::*;

    fn problem(ns: &str, object: &str, reason: &str) -> Problem {
        Problem {
            namespace: ns.into(),
            object: object.into(),
            reason: reason.into(),
            message: String::new(),
        }
    }

    fn exemption(ns: &str) -> ActiveExemption {
        ActiveExemption {
            namespace: ns.into(),
            controls: vec![],
            expires: Time(Timestamp::UNIX_EPOCH),
        }
    }

    /// What the aggregates stand for, computed from every outcome as the status once was.
    fn from_scratch(o: &Outcomes, limit: usize) -> (NamespaceCounts, Vec<Problem>, Vec<Problem>, Vec<String>) {
        let mut counts = NamespaceCounts::default();
        let (mut problems, mut warnings, mut exempted) = (Vec::new(), Vec::new(), Vec::new());
        for (_, outcome) in o.iter() {
            counts.selected += 1;
            *count_of(&mut counts, outcome.state) += 1;
            problems.extend(outcome.problems.iter().cloned());
            warnings.extend(outcome.warnings.iter().cloned());
            exempted.extend(outcome.exemption.iter().map(|e| e.namespace.clone()));
        }
        problems.sort();
        problems.truncate(limit);
        warnings.sort();
        warnings.truncate(limit);
        exempted.sort();
        (counts, problems, warnings, exempted)
    }

    fn kept(o: &Outcomes, limit: usize) -> (NamespaceCounts, Vec<Problem>, Vec<Problem>, Vec<String>) {
        let exempted = o.exemptions().into_iter().map(|e| e.namespace).collect();
        (
            o.counts().clone(),
            o.first_problems(limit),
            o.first_warnings(limit),
            exempted,
        )
    }

    #[test]
    fn a_replaced_outcome_no_longer_counts_or_lists() {
        let mut o = Outcomes::default();
        o.insert(
            "a".into(),
            NsOutcome::from_problems(vec![problem("a", "NetworkPolicy/x", "Drift")], None),
        );
        o.insert("b".into(), NsOutcome::from_problems(vec![], Some(exemption("b"))));
        assert_eq!((o.counts().drifted, o.counts().exempted), (1, 1));
        assert_eq!(o.not_complying().collect::<Vec<_>>(), vec!["a"]);

        let previous = o.insert("a".into(), NsOutcome::from_problems(vec![], None));
        assert_eq!(previous.map(|p| p.state), Some(NsState::Drifted));
        assert_eq!(o.counts().drifted, 0);
        assert_eq!(o.counts().compliant, 1);
        assert!(o.first_problems(50).is_empty());
        assert_eq!(o.not_complying().count(), 0);

        o.remove("b");
        assert_eq!((o.counts().selected, o.counts().exempted), (1, 0));
        assert!(o.exemptions().is_empty());
    }

    #[test]
    fn outcomes_not_at_the_current_generation_are_counted() {
        let at = |generation| NsOutcome {
            generation,
            ..NsOutcome::from_problems(vec![], None)
        };
        let mut o: Outcomes = [("a".to_string(), at(Some(1))), ("b".to_string(), at(Some(2)))].into();
        assert_eq!((o.not_at(Some(1)), o.not_at(Some(2)), o.not_at(Some(3))), (1, 1, 2));
        o.insert("a".into(), at(Some(2)));
        assert_eq!(o.not_at(Some(2)), 0);
        o.retain(|ns| ns != "b");
        assert_eq!((o.len(), o.not_at(Some(2))), (1, 0));
    }

    #[test]
    fn the_first_problems_are_those_that_sort_first() {
        let o: Outcomes = (0..300)
            .rev()
            .map(|i| {
                let ns = format!("ns-{i:03}");
                let problems = vec![
                    problem(&ns, "RoleBinding/b", "Drift"),
                    problem(&ns, "NetworkPolicy/a", "Bypassed"),
                ];
                (ns, NsOutcome::from_problems(problems, None))
            })
            .collect();
        assert_eq!(kept(&o, 50), from_scratch(&o, 50));
        assert_eq!(o.first_problems(3)[2].namespace, "ns-001");
    }

    fn arb_outcome() -> impl Strategy<Value = NsOutcome> {
        // Few namespaces and objects, so that replacements and equal problems happen.
        let problem = (
            0..4u8,
            0..3u8,
            prop_oneof![Just("Drift"), Just("Conflict"), Just("Forbidden")],
        )
            .prop_map(|(ns, obj, reason)| problem(&format!("ns-{ns}"), &format!("NetworkPolicy/p{obj}"), reason));
        (
            prop::collection::vec(problem.clone(), 0..4),
            prop::collection::vec(problem, 0..3),
            prop::option::of(0..4u8),
            prop::option::of(1..3i64),
        )
            .prop_map(|(problems, warnings, exempt, generation)| NsOutcome {
                warnings,
                generation,
                ..NsOutcome::from_problems(problems, exempt.map(|ns| exemption(&format!("ns-{ns}"))))
            })
    }

    proptest! {
        /// Whatever the order of changes, the kept aggregates are what a walk over every
        /// outcome finds.
        #[test]
        fn aggregates_match_a_walk_over_every_outcome(
            changes in prop::collection::vec((0..6u8, prop::option::of(arb_outcome())), 1..40),
            limit in 1..8usize,
        ) {
            let mut o = Outcomes::default();
            for (ns, change) in changes {
                let ns = format!("ns-{ns}");
                match change {
                    Some(outcome) => { o.insert(ns, outcome); }
                    None => { o.remove(&ns); }
                }
                prop_assert_eq!(kept(&o, limit), from_scratch(&o, limit));
                let not_complying: Vec<&String> = o.iter().filter(|(_, x)| !x.state.complies()).map(|(ns, _)| ns).collect();
                prop_assert_eq!(o.not_complying().collect::<Vec<_>>(), not_complying);
                for generation in [None, Some(1), Some(2)] {
                    let walked = o.iter().filter(|(_, x)| x.generation != generation).count();
                    prop_assert_eq!(o.not_at(generation), walked);
                }
            }
        }
    }

    /// Not a check (timings on a shared machine prove nothing): prints what one status pass's
    /// aggregation costs at 1,000 and 10,000 namespaces, kept against walked.
    /// `cargo test --release --lib outcomes::tests::aggregation_cost -- --ignored --nocapture`
    #[test]
    #[ignore = "a measurement, not a test"]
    fn aggregation_cost() {
        for n in [1_000, 10_000] {
            let o: Outcomes = (0..n)
                .map(|i| (format!("ns-{i:05}"), NsOutcome::from_problems(vec![], None)))
                .collect();
            let passes = 200;
            let t = std::time::Instant::now();
            for _ in 0..passes {
                std::hint::black_box(kept(&o, 50));
                std::hint::black_box(o.not_at(Some(1)));
            }
            let kept_cost = t.elapsed() / passes;
            let t = std::time::Instant::now();
            for _ in 0..passes {
                std::hint::black_box(from_scratch(&o, 50));
                std::hint::black_box(o.iter().filter(|(_, x)| x.generation != Some(1)).count());
            }
            let walked_cost = t.elapsed() / passes;
            println!("{n} namespaces: kept {kept_cost:?} per pass, walked {walked_cost:?} per pass");
        }
    }
}
