//! Which agent and controller releases work together. Each side sends its release in `Register`
//! (the agent's `agent_version`, the controller's `controller_version`); the controller refuses
//! an agent it cannot serve, and the agent refuses a controller it cannot follow, before any
//! policy is asked for, so an incompatible pairing never gets half a policy.
//!
//! The rule: the same major release and at most one minor release apart (either side ahead).
//! An empty version is a release from before versions were checked (the controller of 0.1.0
//! answers none): it counts as that previous release, which the rule admits.

/// This build's release, as both sides send it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The release a peer that sends no version is taken to be.
pub const UNVERSIONED: &str = "0.1.0";

/// Why two releases cannot work together; the message names both.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Incompatible {
    #[error(
        "agent {agent} and controller {controller} are incompatible: releases work together only \
         within one minor release of each other (same major); upgrade the older side first"
    )]
    TooFarApart { agent: String, controller: String },
    #[error(
        "agent {agent} and controller {controller}: `{bad}` is not a release version (MAJOR.MINOR.PATCH)"
    )]
    Unreadable {
        agent: String,
        controller: String,
        bad: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Release {
    major: u64,
    minor: u64,
}

/// `MAJOR.MINOR.PATCH`, with an optional `-pre` or `+build` tail.
fn parse(v: &str) -> Option<Release> {
    let core = v.split(['-', '+']).next()?;
    let parts: Vec<&str> = core.split('.').collect();
    let [major, minor, patch] = parts[..] else {
        return None;
    };
    let number = |p: &str| -> Option<u64> {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        p.parse().ok()
    };
    number(patch)?;
    Some(Release {
        major: number(major)?,
        minor: number(minor)?,
    })
}

fn or_unversioned(v: &str) -> &str {
    if v.is_empty() { UNVERSIONED } else { v }
}

/// Whether agent release `agent` and controller release `controller` work together.
pub fn check(agent: &str, controller: &str) -> Result<(), Incompatible> {
    let (a, c) = (or_unversioned(agent), or_unversioned(controller));
    let named = |bad: &str| Incompatible::Unreadable {
        agent: a.to_string(),
        controller: c.to_string(),
        bad: bad.to_string(),
    };
    let ra = parse(a).ok_or_else(|| named(a))?;
    let rc = parse(c).ok_or_else(|| named(c))?;
    if ra.major == rc.major && ra.minor.abs_diff(rc.minor) <= 1 {
        Ok(())
    } else {
        Err(Incompatible::TooFarApart {
            agent: a.to_string(),
            controller: c.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_minor_release_apart_either_way_works() {
        for (a, c) in [
            ("0.2.0", "0.2.0"),
            ("0.1.0", "0.2.0"),
            ("0.2.0", "0.1.0"),
            ("0.2.3", "0.3.0-rc.1"),
            ("1.4.0", "1.5.2"),
        ] {
            assert_eq!(check(a, c), Ok(()), "{a} / {c}");
        }
    }

    #[test]
    fn an_unversioned_peer_is_the_previous_release() {
        assert_eq!(check("", "0.2.0"), Ok(()));
        assert_eq!(check("0.2.0", ""), Ok(()));
        // 0.1.0 is two minor releases behind 0.3.0.
        let e = check("0.3.0", "").unwrap_err();
        assert!(e.to_string().contains("controller 0.1.0"), "{e}");
    }

    #[test]
    fn releases_further_apart_are_refused_naming_both() {
        for (a, c) in [("0.1.0", "0.3.0"), ("0.4.1", "0.2.0"), ("1.0.0", "0.9.0")] {
            let e = check(a, c).unwrap_err();
            let msg = e.to_string();
            assert!(
                msg.contains(&format!("agent {a}")) && msg.contains(&format!("controller {c}")),
                "{msg}"
            );
        }
    }

    #[test]
    fn an_unreadable_version_is_refused() {
        for bad in ["2", "0.2", "0.2.x", "0.2.0.1", "v0.2.0", "0.2.-1"] {
            let e = check(bad, "0.2.0").unwrap_err();
            assert!(matches!(e, Incompatible::Unreadable { .. }), "{bad}: {e}");
        }
    }

    #[test]
    fn this_build_is_compatible_with_itself() {
        assert_eq!(check(VERSION, VERSION), Ok(()));
    }
}
