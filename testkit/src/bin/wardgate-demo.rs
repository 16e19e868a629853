//! The demo ward (`cargo xtask demo [--keep]`): see `wardgate_testkit::demo`.
//!
//! `WARDGATE_DEMO_AGENT=PATH` runs another agent binary, `WARDGATE_DEMO_CONTROLLER=DIR` another
//! `wardgate-controller` and its `wardctl` (from DIR): the package tier's skew check runs the
//! previous release's agent against this controller and the reverse (the short story).

fn main() -> anyhow::Result<()> {
    let keep = std::env::args().skip(1).any(|a| a == "--keep");
    if let Some(other) = std::env::args().skip(1).find(|a| a != "--keep") {
        anyhow::bail!("unknown argument `{other}` (usage: wardgate-demo [--keep])");
    }
    wardgate_testkit::demo::run(keep)
}
