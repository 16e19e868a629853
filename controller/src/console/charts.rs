//! The device page's charts, drawn on the server as SVG (no script, no library; geometry in
//! attributes and colours in `console.css` classes, as the CSP allows no inline style): the
//! last 7 days of traffic from the stored flow rows, and the baseline's states over time. Each
//! has a `<title>`/`<desc>` in its template and a table beside it with the same numbers.

use wardgate_analysis::{
    aggregate::{FlowAggregate, NS_PER_DAY, day_of},
    baseline::lifecycle::{Lifecycle, State},
};

/// Days in the traffic chart.
pub const DAYS: u32 = 7;
/// Drawing size (the viewBox; the SVG scales to the page).
pub const WIDTH: u32 = 700;
pub const HEIGHT: u32 = 200;
/// Room under the bars for the day labels.
const AXIS: u32 = 24;

pub struct DayBar {
    /// `MM-DD`.
    pub label: String,
    pub bytes: u64,
    pub flows: u64,
    pub x: u32,
    pub width: u32,
    /// The bytes bar: top and height.
    pub y: u32,
    pub height: u32,
    /// The flows marker's height (its own scale).
    pub flow_y: u32,
    /// Middle of the bar, for the label.
    pub mid: u32,
}

pub struct TrafficChart {
    pub days: Vec<DayBar>,
    pub max_bytes: u64,
    pub max_flows: u64,
    pub axis_y: u32,
}

impl TrafficChart {
    pub fn is_empty(&self) -> bool {
        self.max_flows == 0
    }
}

fn label(day: u32) -> String {
    match time::OffsetDateTime::from_unix_timestamp(i64::from(day) * 86_400) {
        Ok(t) => format!("{:02}-{:02}", u8::from(t.month()), t.day()),
        Err(_) => day.to_string(),
    }
}

/// Bytes (both ways) and flows per UTC day, for the `DAYS` days ending on `now_ns`'s day.
pub fn traffic(rows: &[FlowAggregate], now_ns: u64) -> TrafficChart {
    let last = day_of(now_ns);
    let first = last.saturating_sub(DAYS - 1);
    let mut bytes = [0u64; DAYS as usize];
    let mut flows = [0u64; DAYS as usize];
    for r in rows {
        if r.key.day < first || r.key.day > last {
            continue;
        }
        let i = (r.key.day - first) as usize;
        bytes[i] = bytes[i].saturating_add(r.bytes_in.saturating_add(r.bytes_out));
        flows[i] = flows[i].saturating_add(r.flows);
    }
    let max_bytes = bytes.iter().copied().max().unwrap_or(0);
    let max_flows = flows.iter().copied().max().unwrap_or(0);
    let plot = HEIGHT - AXIS;
    let slot = WIDTH / DAYS;
    let scale = |v: u64, max: u64| -> u32 {
        if max == 0 {
            0
        } else {
            ((u128::from(v) * u128::from(plot - 4)) / u128::from(max)) as u32
        }
    };
    let days = (0..DAYS as usize)
        .map(|i| {
            let h = scale(bytes[i], max_bytes);
            let fh = scale(flows[i], max_flows);
            let x = i as u32 * slot + slot / 6;
            DayBar {
                label: label(first + i as u32),
                bytes: bytes[i],
                flows: flows[i],
                x,
                width: slot * 2 / 3,
                y: plot - h,
                height: h,
                flow_y: plot - fh,
                mid: i as u32 * slot + slot / 2,
            }
        })
        .collect();
    TrafficChart {
        days,
        max_bytes,
        max_flows,
        axis_y: plot,
    }
}

pub struct Segment {
    /// `learning`, `frozen` or `approved` (also the CSS class).
    pub state: &'static str,
    pub from: String,
    pub to: String,
    pub x: u32,
    pub width: u32,
}

pub struct BaselineChart {
    pub segments: Vec<Segment>,
}

/// The baseline's periods from its start to `now_ns`: learning until frozen, then frozen or
/// approved (the store keeps the current state and when it was frozen, not each change).
pub fn baseline(lc: &Lifecycle, now_ns: u64) -> BaselineChart {
    let start = lc.start_ns.min(now_ns);
    let span = now_ns.saturating_sub(start).max(1);
    let x = |ns: u64| -> u32 {
        ((u128::from(ns.saturating_sub(start).min(span)) * u128::from(WIDTH)) / u128::from(span))
            as u32
    };
    let mut segments = Vec::new();
    let frozen = lc.frozen_ns.filter(|_| lc.state != State::Learning);
    let learn_end = frozen.unwrap_or(now_ns);
    segments.push(Segment {
        state: State::Learning.as_str(),
        from: super::page::time_ns(start),
        to: super::page::time_ns(learn_end),
        x: 0,
        width: x(learn_end).max(1),
    });
    if let Some(f) = frozen {
        segments.push(Segment {
            state: lc.state.as_str(),
            from: super::page::time_ns(f),
            to: super::page::time_ns(now_ns),
            x: x(f),
            width: WIDTH.saturating_sub(x(f)).max(1),
        });
    }
    BaselineChart { segments }
}

/// The first ns of the traffic chart's window.
pub fn window_start(now_ns: u64) -> u64 {
    u64::from(day_of(now_ns).saturating_sub(DAYS - 1)) * NS_PER_DAY
}

#[cfg(test)]
mod tests {
    use super::*;
    use wardgate_analysis::aggregate::AggregateKey;

    fn row(day: u32, bytes: u64, flows: u64) -> FlowAggregate {
        FlowAggregate {
            key: AggregateKey {
                device: "pump".into(),
                direction: wardgate_analysis::flow::FlowDirection::Opened,
                peer: "192.0.2.1".parse().unwrap(),
                proto: 6,
                port: 443,
                day,
            },
            flows,
            packets_out: 0,
            packets_in: 0,
            bytes_out: bytes,
            bytes_in: 0,
            first_seen_ns: 0,
            last_seen_ns: 0,
            detail: Default::default(),
            peer_name: None,
            named_flows: 0,
        }
    }

    #[test]
    fn bars_scale_to_the_busiest_day_and_older_rows_are_left_out() {
        let now = 20_000 * NS_PER_DAY + 5;
        let rows = [
            row(20_000, 1000, 2),
            row(19_999, 500, 8),
            row(19_990, 9999, 9),
        ];
        let c = traffic(&rows, now);
        assert_eq!(c.days.len(), 7);
        assert_eq!((c.max_bytes, c.max_flows), (1000, 8));
        let today = &c.days[6];
        assert_eq!((today.bytes, today.flows), (1000, 2));
        assert_eq!(today.y, 4, "the busiest day fills the plot");
        assert_eq!(c.days[5].height * 2, today.height);
        assert_eq!(c.days[0].height, 0);
        assert_eq!(c.days[0].label, "09-28"); // 2024-09-28 is day 19994
        assert!(traffic(&[], now).is_empty());
    }

    #[test]
    fn a_frozen_baseline_is_two_periods() {
        let lc = Lifecycle {
            state: State::Approved,
            start_ns: 0,
            window_days: 7,
            frozen_ns: Some(3 * NS_PER_DAY),
        };
        let b = baseline(&lc, 4 * NS_PER_DAY);
        assert_eq!(b.segments.len(), 2);
        assert_eq!(
            (b.segments[0].state, b.segments[0].width),
            ("learning", 525)
        );
        assert_eq!((b.segments[1].state, b.segments[1].x), ("approved", 525));
        let learning = Lifecycle {
            state: State::Learning,
            frozen_ns: None,
            ..lc
        };
        assert_eq!(baseline(&learning, 4 * NS_PER_DAY).segments.len(), 1);
    }
}
