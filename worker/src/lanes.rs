//! The task topics this worker serves: for each of its workflow types (or
//! every type), the default lane `weft.<type>.tasks`, the urgent lane
//! `weft.<type>.tasks.urgent`, and every lane whose requirements its declared
//! capabilities, labels and resources meet (see [`weft_shared::lanes`]). The
//! default and urgent lanes are subscribed by name (or by pattern, for every
//! type); the constrained lanes are found in the broker's metadata, and the
//! subscription is brought up to date every [`REFRESH`] (the group rebalances
//! when a new lane appears).

use std::collections::BTreeSet;
use std::time::Duration;

use weft_shared::lanes::{NodeCapabilities, Requirements};
use weft_shared::Topics;

/// How often the worker looks for new lanes it can serve.
pub const REFRESH: Duration = Duration::from_secs(5);

/// What this worker serves.
#[derive(Clone, Debug)]
pub struct Served {
    topics: Topics,
    types: Vec<String>,
    offer: NodeCapabilities,
}

impl Served {
    pub fn new(topics: Topics, types: &[String], offer: NodeCapabilities) -> Self {
        Self {
            topics,
            types: types
                .iter()
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
                .collect(),
            offer,
        }
    }

    /// What the worker offers.
    pub fn offer(&self) -> &NodeCapabilities {
        &self.offer
    }

    /// The lane of a task topic this worker serves (`None`: not served).
    pub fn lane(&self, topic: &str) -> Option<Requirements> {
        let (ty, req) = self.topics.parse_lane(topic)?;
        let typed = self.types.is_empty() || self.types.iter().any(|t| t == ty);
        (typed && self.offer.satisfies(&req)).then_some(req)
    }

    /// Whether the worker serves `topic`.
    pub fn serves(&self, topic: &str) -> bool {
        self.lane(topic).is_some()
    }

    /// The subscription: the default and urgent lanes of the types (by name,
    /// or as `^` patterns for every type), then the constrained lanes among
    /// `existing` topic names that the worker serves, sorted.
    pub fn subscription<'a>(&self, existing: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        let urgent = Requirements {
            urgent: true,
            ..Requirements::default()
        };
        let mut out: Vec<String> = if self.types.is_empty() {
            let prefix = regex_escape(self.topics.prefix());
            vec![
                format!("^{prefix}\\.[A-Za-z0-9_-]+\\.tasks$"),
                format!("^{prefix}\\.[A-Za-z0-9_-]+\\.tasks\\.urgent$"),
            ]
        } else {
            self.types
                .iter()
                .flat_map(|t| [self.topics.tasks(t), self.topics.lane(t, &urgent)])
                .collect()
        };
        let lanes: BTreeSet<String> = existing
            .into_iter()
            .filter(|name| self.lane(name).is_some_and(|req| req.is_constrained()))
            .map(str::to_owned)
            .collect();
        out.extend(lanes);
        out
    }
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let special = "\\.+*?()|[]{}^$".contains(c);
            special
                .then_some('\\')
                .into_iter()
                .chain(std::iter::once(c))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu_worker(types: &[&str]) -> Served {
        let types: Vec<String> = types.iter().map(|t| (*t).to_owned()).collect();
        let offer =
            NodeCapabilities::declared(&["gpu".into(), "region=eu".into()], &["cpu=4".into()], 8)
                .unwrap();
        Served::new(Topics::new("weft"), &types, offer)
    }

    #[test]
    fn serves_the_lanes_it_meets_of_its_types() {
        let w = gpu_worker(&["render"]);
        let existing = [
            "weft.render.tasks",
            "weft.render.tasks.cap-gpu",
            "weft.render.tasks.urgent.cap-gpu.res-cpu--4",
            "weft.render.tasks.res-cpu--8",
            "weft.render.tasks.sel-region--eu",
            "weft.render.tasks.sel-region--us",
            "weft.render.tasks.cap-fpga",
            "weft.other.tasks.cap-gpu",
            "weft.render.events",
        ];
        assert_eq!(
            w.subscription(existing),
            [
                "weft.render.tasks",
                "weft.render.tasks.urgent",
                "weft.render.tasks.cap-gpu",
                "weft.render.tasks.sel-region--eu",
                "weft.render.tasks.urgent.cap-gpu.res-cpu--4",
            ]
        );
        assert!(w.serves("weft.render.tasks.urgent"));
        assert!(!w.serves("weft.render.tasks.res-cpu--8"));
        assert!(!w.serves("weft.other.tasks"));
    }

    #[test]
    fn a_worker_of_every_type_subscribes_by_pattern_and_lists_its_lanes() {
        let w = gpu_worker(&[]);
        assert_eq!(
            w.subscription(["weft.a.tasks.cap-gpu", "weft.b.tasks.cap-tpu"]),
            [
                r"^weft\.[A-Za-z0-9_-]+\.tasks$",
                r"^weft\.[A-Za-z0-9_-]+\.tasks\.urgent$",
                "weft.a.tasks.cap-gpu",
            ]
        );
        let plain = Served::new(
            Topics::new("a.b+"),
            &[],
            NodeCapabilities::declared(&[], &[], 1).unwrap(),
        );
        assert_eq!(
            plain.subscription([])[0],
            r"^a\.b\+\.[A-Za-z0-9_-]+\.tasks$"
        );
        assert!(!plain.serves("a.b+.x.tasks.cap-gpu"));
    }
}
