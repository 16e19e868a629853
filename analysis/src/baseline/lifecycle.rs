//! A device's baseline over time: learning for a window of days from its start, then frozen
//! (it stops growing) and approved (an engineer signed it off); relearn starts a new window.
//! Pure: the controller stores it and audits each move.

use serde::{Deserialize, Serialize};

use super::Window;
use crate::aggregate::NS_PER_DAY;

/// The learning window a new device gets.
pub const DEFAULT_WINDOW_DAYS: u32 = 7;
/// Longest window accepted (a year).
pub const MAX_WINDOW_DAYS: u32 = 366;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Learning,
    Frozen,
    Approved,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Learning => "learning",
            State::Frozen => "frozen",
            State::Approved => "approved",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        match s {
            "learning" => Some(State::Learning),
            "frozen" => Some(State::Frozen),
            "approved" => Some(State::Approved),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Freeze,
    Approve,
    /// Clear and learn again, for `window_days` (None: keep the current window length).
    Relearn {
        window_days: Option<u32>,
    },
}

impl Action {
    pub fn parse(s: &str, window_days: u32) -> Result<Action, LifecycleError> {
        match s {
            "freeze" => Ok(Action::Freeze),
            "approve" => Ok(Action::Approve),
            "relearn" => Ok(Action::Relearn {
                window_days: (window_days != 0).then_some(window_days),
            }),
            other => Err(LifecycleError::UnknownAction(other.to_string())),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LifecycleError {
    #[error("`{0}` is not one of freeze, approve, relearn")]
    UnknownAction(String),
    #[error("the baseline is already {0}; relearn to start again")]
    AlreadyFrozen(&'static str),
    #[error("only a frozen baseline can be approved (it is {0}); freeze it first")]
    NotFrozen(&'static str),
    #[error("a learning window of {0} days is outside 1..={MAX_WINDOW_DAYS}")]
    BadWindow(u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifecycle {
    pub state: State,
    /// Start of the learning window (ns since the epoch).
    pub start_ns: u64,
    pub window_days: u32,
    /// When it was frozen (frozen and approved only).
    pub frozen_ns: Option<u64>,
}

impl Lifecycle {
    /// A device starts learning when its first flow is recorded.
    pub fn start(start_ns: u64) -> Lifecycle {
        Lifecycle {
            state: State::Learning,
            start_ns,
            window_days: DEFAULT_WINDOW_DAYS,
            frozen_ns: None,
        }
    }

    /// The end of the learning window as configured.
    pub fn planned_end_ns(&self) -> u64 {
        self.start_ns
            .saturating_add(u64::from(self.window_days) * NS_PER_DAY)
    }

    /// The flows the baseline is built from at `now_ns`: from the start to the freeze, or to
    /// now while learning, never past the planned end.
    pub fn window(&self, now_ns: u64) -> Window {
        let end = self
            .frozen_ns
            .unwrap_or(now_ns)
            .min(self.planned_end_ns())
            .max(self.start_ns);
        Window {
            start_ns: self.start_ns,
            end_ns: end,
        }
    }

    /// The lifecycle after `action` at `now_ns`, or why it cannot happen.
    pub fn apply(&self, action: Action, now_ns: u64) -> Result<Lifecycle, LifecycleError> {
        match (action, self.state) {
            (Action::Freeze, State::Learning) => Ok(Lifecycle {
                state: State::Frozen,
                frozen_ns: Some(now_ns.min(self.planned_end_ns()).max(self.start_ns)),
                ..*self
            }),
            (Action::Freeze, s) => Err(LifecycleError::AlreadyFrozen(s.as_str())),
            (Action::Approve, State::Frozen) => Ok(Lifecycle {
                state: State::Approved,
                ..*self
            }),
            (Action::Approve, s) => Err(LifecycleError::NotFrozen(s.as_str())),
            (Action::Relearn { window_days }, _) => {
                let days = window_days.unwrap_or(self.window_days);
                if !(1..=MAX_WINDOW_DAYS).contains(&days) {
                    return Err(LifecycleError::BadWindow(days));
                }
                Ok(Lifecycle {
                    state: State::Learning,
                    start_ns: now_ns,
                    window_days: days,
                    frozen_ns: None,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = NS_PER_DAY;

    #[test]
    fn learning_then_frozen_then_approved_and_relearn_restarts() {
        let l = Lifecycle::start(10 * DAY);
        assert_eq!(l.window(12 * DAY).end_ns, 12 * DAY, "grows while learning");
        assert_eq!(l.window(30 * DAY).end_ns, 17 * DAY, "never past the window");
        assert_eq!(
            l.apply(Action::Approve, 11 * DAY),
            Err(LifecycleError::NotFrozen("learning"))
        );
        let f = l.apply(Action::Freeze, 12 * DAY).unwrap();
        assert_eq!(f.state, State::Frozen);
        assert_eq!(
            f.window(20 * DAY).end_ns,
            12 * DAY,
            "stops growing when frozen"
        );
        assert_eq!(
            f.apply(Action::Freeze, 13 * DAY),
            Err(LifecycleError::AlreadyFrozen("frozen"))
        );
        let a = f.apply(Action::Approve, 13 * DAY).unwrap();
        assert_eq!(
            (a.state, a.window(40 * DAY)),
            (State::Approved, f.window(40 * DAY))
        );
        let r = a
            .apply(
                Action::Relearn {
                    window_days: Some(3),
                },
                50 * DAY,
            )
            .unwrap();
        assert_eq!(
            r,
            Lifecycle {
                state: State::Learning,
                start_ns: 50 * DAY,
                window_days: 3,
                frozen_ns: None
            }
        );
        assert_eq!(
            r.apply(
                Action::Relearn {
                    window_days: Some(0)
                },
                51 * DAY
            ),
            Err(LifecycleError::BadWindow(0))
        );
        assert_eq!(
            Action::parse("relearn", 0),
            Ok(Action::Relearn { window_days: None })
        );
        assert!(matches!(
            Action::parse("thaw", 0),
            Err(LifecycleError::UnknownAction(_))
        ));
        // Freezing after the window ended freezes at its end.
        let late = l.apply(Action::Freeze, 99 * DAY).unwrap();
        assert_eq!(late.frozen_ns, Some(17 * DAY));
    }
}
