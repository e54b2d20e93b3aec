//! Normalization of a proposal, as `horizontal.go` does it, with the controller's memory of
//! recent recommendations and scale events:
//!
//! * legacy path (no `behavior`, e.g. every autoscaling/v1 HPA): the highest recommendation of
//!   the downscale-stabilization window wins, scale-up is capped at max(2 × current, 4), then
//!   min/max apply;
//! * behavior path: scale-up takes the lowest and scale-down the highest recommendation of their
//!   windows, then the per-period policies (Pods/Percent, Max/Min/Disabled) and min/max apply.
//!
//! Times are [`Tick`]s: monotonic time since the controller started.

use std::time::Duration;

use crate::kinds::hpa::policy::{Behaviors, PolicyKind, Rules, Select};

/// Monotonic time since the controller started.
pub type Tick = Duration;

/// A recommendation and when it was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recommendation {
    pub replicas: i32,
    pub at: Tick,
}

/// A rescale and when it happened (`replicas`: how many were added, or removed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleEvent {
    pub change: i32,
    pub at: Tick,
    pub outdated: bool,
}

/// What the controller remembers about one HPA.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Memory {
    pub recommendations: Vec<Recommendation>,
    pub scale_up_events: Vec<ScaleEvent>,
    pub scale_down_events: Vec<ScaleEvent>,
    /// False until the first sync recorded the size the HPA found.
    pub seeded: bool,
}

/// A condition outcome: (reason, message).
pub type Why = (&'static str, &'static str);

/// The result of a normalization, with the conditions it implies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Normalized {
    pub replicas: i32,
    /// `AbleToScale=True` with this reason.
    pub able: Why,
    /// `ScalingLimited` status and reason.
    pub limited: (bool, Why),
}

const READY_FOR_NEW_SCALE: Why = ("ReadyForNewScale", "recommended size matches current size");
const SCALE_DOWN_STABILIZED: Why = (
    "ScaleDownStabilized",
    "recent recommendations were higher than current one, applying the highest recent recommendation",
);
const SCALE_UP_STABILIZED: Why = (
    "ScaleUpStabilized",
    "recent recommendations were lower than current one, applying the lowest recent recommendation",
);
const SCALE_UP_LIMIT: Why = (
    "ScaleUpLimit",
    "the desired replica count is increasing faster than the maximum scale rate",
);
const SCALE_DOWN_LIMIT: Why = (
    "ScaleDownLimit",
    "the desired replica count is decreasing faster than the maximum scale rate",
);
const TOO_MANY: Why = (
    "TooManyReplicas",
    "the desired replica count is more than the maximum replica count",
);
const TOO_FEW: Why = (
    "TooFewReplicas",
    "the desired replica count is less than the minimum replica count",
);
const WITHIN_RANGE: Why = (
    "DesiredWithinRange",
    "the desired count is within the acceptable range",
);

/// `now - d`, or `None` when that is before the controller started (everything is after it).
fn cutoff(now: Tick, d: Duration) -> Option<Tick> {
    now.checked_sub(d)
}

fn before(t: Tick, c: Option<Tick>) -> bool {
    c.is_some_and(|c| t < c)
}

fn after(t: Tick, c: Option<Tick>) -> bool {
    c.is_none_or(|c| t > c)
}

impl Memory {
    /// Seeds the recommendations with the current size the first time an HPA is seen.
    pub fn record_initial(&mut self, current: i32, now: Tick) {
        if !self.seeded {
            self.recommendations.push(Recommendation {
                replicas: current,
                at: now,
            });
            self.seeded = true;
        }
    }

    /// Stores `rec`, reusing the slot of the last stale recommendation if there is one.
    fn store_recommendation(&mut self, stale: Option<usize>, rec: Recommendation) {
        match stale {
            Some(i) => self.recommendations[i] = rec,
            None => self.recommendations.push(rec),
        }
    }

    /// `stabilizeRecommendation`: the highest recommendation of the window, this one included.
    pub fn stabilize_legacy(&mut self, desired: i32, window: Duration, now: Tick) -> i32 {
        let c = cutoff(now, window);
        let mut max = desired;
        let mut stale = None;
        for (i, r) in self.recommendations.iter().enumerate() {
            if before(r.at, c) {
                stale = Some(i);
            } else if r.replicas > max {
                max = r.replicas;
            }
        }
        self.store_recommendation(
            stale,
            Recommendation {
                replicas: desired,
                at: now,
            },
        );
        max
    }

    /// `stabilizeRecommendationWithBehaviors`: at least the lowest recommendation of the
    /// scale-up window and at most the highest of the scale-down window.
    pub fn stabilize_with_behaviors(
        &mut self,
        current: i32,
        desired: i32,
        up_window: Duration,
        down_window: Duration,
        now: Tick,
    ) -> (i32, Why) {
        let (up_c, down_c) = (cutoff(now, up_window), cutoff(now, down_window));
        let (mut up, mut down) = (desired, desired);
        let mut stale = None;
        for (i, r) in self.recommendations.iter().enumerate() {
            if after(r.at, up_c) {
                up = up.min(r.replicas);
            }
            if after(r.at, down_c) {
                down = down.max(r.replicas);
            }
            if before(r.at, up_c) && before(r.at, down_c) {
                stale = Some(i);
            }
        }
        let stabilized = current.max(up).min(down);
        self.store_recommendation(
            stale,
            Recommendation {
                replicas: desired,
                at: now,
            },
        );
        let why = if desired >= current {
            SCALE_UP_STABILIZED
        } else {
            SCALE_DOWN_STABILIZED
        };
        (stabilized, why)
    }

    /// `storeScaleEvent`: remembers a rescale (only HPAs with a behavior use them).
    pub fn store_scale_event(
        &mut self,
        behavior: Option<&Behaviors>,
        prev: i32,
        new: i32,
        now: Tick,
    ) {
        let Some(b) = behavior else { return };
        let (events, rules, change) = if new > prev {
            (&mut self.scale_up_events, &b.scale_up, new - prev)
        } else {
            (&mut self.scale_down_events, &b.scale_down, prev - new)
        };
        let longest = longest_period(rules);
        let c = cutoff(now, longest);
        let mut stale = None;
        for (i, e) in events.iter_mut().enumerate() {
            if before(e.at, c) {
                e.outdated = true;
            }
            if e.outdated {
                stale = Some(i);
            }
        }
        let ev = ScaleEvent {
            change,
            at: now,
            outdated: false,
        };
        match stale {
            Some(i) => events[i] = ev,
            None => events.push(ev),
        }
    }
}

fn longest_period(r: &Rules) -> Duration {
    Duration::from_secs(
        r.policies
            .iter()
            .map(|p| u64::from(p.period_seconds))
            .max()
            .unwrap_or(0),
    )
}

/// `getReplicasChangePerPeriod`: replicas changed by events newer than `period`.
pub fn change_in_period(period: Duration, events: &[ScaleEvent], now: Tick) -> i32 {
    let c = cutoff(now, period);
    events
        .iter()
        .filter(|e| after(e.at, c))
        .map(|e| e.change)
        .sum()
}

/// The legacy scale-up cap: max(2 × current, 4) (Kubernetes issue #32304).
pub fn legacy_scale_up_limit(current: i32) -> i32 {
    (2 * i64::from(current)).max(4).min(i64::from(i32::MAX)) as i32
}

/// `convertDesiredReplicasWithRules`: the legacy bounds.
pub fn convert_with_rules(current: i32, desired: i32, min: i32, max: i32) -> (i32, Why) {
    let limit = legacy_scale_up_limit(current);
    let (max_allowed, why) = if max > limit {
        (limit, SCALE_UP_LIMIT)
    } else {
        (max, TOO_MANY)
    };
    if desired < min {
        (min, TOO_FEW)
    } else if desired > max_allowed {
        (max_allowed, why)
    } else {
        (desired, WITHIN_RANGE)
    }
}

/// Direction of a rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Up,
    Down,
}

/// The replica count each policy allows from the size at the start of its period (current,
/// less what was added and plus what was removed within it), the largest change winning under
/// `Max` and the smallest under `Min`: `calculateScaleUpLimitWithScalingRules` and
/// `calculateScaleDownLimitWithBehaviors`.
fn rate_limit(
    dir: Direction,
    current: i32,
    up: &[ScaleEvent],
    down: &[ScaleEvent],
    rules: &Rules,
    now: Tick,
) -> i32 {
    // The largest change is the highest count up and the lowest count down.
    let largest_change = (rules.select == Select::Max) == (dir == Direction::Up);
    let pick: fn(i64, i64) -> i64 = match rules.select {
        Select::Disabled => return current,
        _ if largest_change => i64::max,
        _ => i64::min,
    };
    let mut result = if largest_change { i64::MIN } else { i64::MAX };
    for p in &rules.policies {
        let period = Duration::from_secs(u64::from(p.period_seconds));
        let start = i64::from(current) - i64::from(change_in_period(period, up, now))
            + i64::from(change_in_period(period, down, now));
        let value = i64::from(p.value);
        let proposed = match (p.kind, dir) {
            (PolicyKind::Pods, Direction::Up) => start + value,
            (PolicyKind::Pods, Direction::Down) => start - value,
            // Rounded up so that a small percentage can still add a replica.
            (PolicyKind::Percent, Direction::Up) => {
                (start as f64 * (1.0 + value as f64 / 100.0)).ceil() as i64
            }
            (PolicyKind::Percent, Direction::Down) => {
                (start as f64 * (1.0 - value as f64 / 100.0)) as i64
            }
        };
        result = pick(result, proposed);
    }
    result.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
}

/// The most replicas the scale-up rules allow now.
pub fn scale_up_limit(
    current: i32,
    up: &[ScaleEvent],
    down: &[ScaleEvent],
    rules: &Rules,
    now: Tick,
) -> i32 {
    rate_limit(Direction::Up, current, up, down, rules, now)
}

/// The fewest replicas the scale-down rules allow now.
pub fn scale_down_limit(
    current: i32,
    up: &[ScaleEvent],
    down: &[ScaleEvent],
    rules: &Rules,
    now: Tick,
) -> i32 {
    rate_limit(Direction::Down, current, up, down, rules, now)
}

/// Bounds of one normalization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub current: i32,
    pub min: i32,
    pub max: i32,
}

/// `convertDesiredReplicasWithBehaviorRate`.
pub fn convert_with_behavior_rate(
    mem: &Memory,
    b: &Behaviors,
    bounds: Bounds,
    desired: i32,
    now: Tick,
) -> (i32, Why) {
    let Bounds { current, min, max } = bounds;
    if desired > current {
        let limit = scale_up_limit(
            current,
            &mem.scale_up_events,
            &mem.scale_down_events,
            &b.scale_up,
            now,
        )
        .max(current);
        let (allowed, why) = if max > limit {
            (limit, SCALE_UP_LIMIT)
        } else {
            (max, TOO_MANY)
        };
        if desired > allowed {
            return (allowed, why);
        }
    } else if desired < current {
        let limit = scale_down_limit(
            current,
            &mem.scale_up_events,
            &mem.scale_down_events,
            &b.scale_down,
            now,
        )
        .min(current);
        let (allowed, why) = if min < limit {
            (limit, SCALE_DOWN_LIMIT)
        } else {
            (min, TOO_FEW)
        };
        if desired < allowed {
            return (allowed, why);
        }
    }
    (desired, WITHIN_RANGE)
}

/// `normalizeDesiredReplicas` (no behavior).
pub fn normalize_legacy(
    mem: &mut Memory,
    bounds: Bounds,
    desired: i32,
    downscale_window: Duration,
    now: Tick,
) -> Normalized {
    let stabilized = mem.stabilize_legacy(desired, downscale_window, now);
    let able = if stabilized != desired {
        SCALE_DOWN_STABILIZED
    } else {
        READY_FOR_NEW_SCALE
    };
    let (replicas, why) = convert_with_rules(bounds.current, stabilized, bounds.min, bounds.max);
    Normalized {
        replicas,
        able,
        limited: (replicas != stabilized, why),
    }
}

/// `normalizeDesiredReplicasWithBehaviors`; a scale-down window left to the controller takes
/// `default_downscale_window`.
pub fn normalize_with_behaviors(
    mem: &mut Memory,
    b: &Behaviors,
    bounds: Bounds,
    desired: i32,
    default_downscale_window: Duration,
    now: Tick,
) -> Normalized {
    let secs = |s: Option<u32>, d: Duration| s.map_or(d, |s| Duration::from_secs(u64::from(s)));
    let up_w = secs(b.scale_up.stabilization_window_seconds, Duration::ZERO);
    let down_w = secs(
        b.scale_down.stabilization_window_seconds,
        default_downscale_window,
    );
    let (stabilized, why) =
        mem.stabilize_with_behaviors(bounds.current, desired, up_w, down_w, now);
    let able = if stabilized != desired {
        why
    } else {
        READY_FOR_NEW_SCALE
    };
    let (replicas, why) = convert_with_behavior_rate(mem, b, bounds, stabilized, now);
    Normalized {
        replicas,
        able,
        limited: (replicas != stabilized, why),
    }
}

#[cfg(test)]
#[path = "behavior_tests.rs"]
mod tests;
