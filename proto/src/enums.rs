//! Mode and severity on the wire. Each travels twice: as its name (`string`, all a 0.1.0 peer
//! sends and reads) and as an enum beside it (`DeviceMode`, `Severity`). Writers fill both
//! (the `set_*` methods); readers take the enum and fall back to the name when the enum is
//! UNSPECIFIED (a 0.1.0 peer), through the `*_value` methods. The names are the policy's
//! `Mode` and the analysis crate's `Severity` (their one `FromStr`/`Display`); this module is
//! the only place that maps them to and from the protobuf enums.

use thiserror::Error;
use wardgate_analysis::detect::finding::Severity;
use wardgate_policy::Mode;

use crate::v1 as pb;

/// A mode or severity field that does not read; the message names the field.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[error("{field}: {problem}")]
pub struct FieldError {
    /// e.g. `mode`, `severity`, `mode_before`.
    pub field: &'static str,
    pub problem: String,
}

impl From<FieldError> for tonic::Status {
    fn from(e: FieldError) -> Self {
        tonic::Status::invalid_argument(e.to_string())
    }
}

pub fn mode_pb(m: Mode) -> pb::DeviceMode {
    match m {
        Mode::Learn => pb::DeviceMode::Learn,
        Mode::Monitor => pb::DeviceMode::Monitor,
        Mode::Enforce => pb::DeviceMode::Enforce,
        Mode::Quarantine => pb::DeviceMode::Quarantine,
    }
}

/// None for UNSPECIFIED.
pub fn mode_of_pb(m: pb::DeviceMode) -> Option<Mode> {
    match m {
        pb::DeviceMode::Unspecified => None,
        pb::DeviceMode::Learn => Some(Mode::Learn),
        pb::DeviceMode::Monitor => Some(Mode::Monitor),
        pb::DeviceMode::Enforce => Some(Mode::Enforce),
        pb::DeviceMode::Quarantine => Some(Mode::Quarantine),
    }
}

pub fn severity_pb(s: Severity) -> pb::Severity {
    match s {
        Severity::Info => pb::Severity::Info,
        Severity::Low => pb::Severity::Low,
        Severity::Medium => pb::Severity::Medium,
        Severity::High => pb::Severity::High,
        Severity::Critical => pb::Severity::Critical,
    }
}

/// None for UNSPECIFIED.
pub fn severity_of_pb(s: pb::Severity) -> Option<Severity> {
    match s {
        pb::Severity::Unspecified => None,
        pb::Severity::Info => Some(Severity::Info),
        pb::Severity::Low => Some(Severity::Low),
        pb::Severity::Medium => Some(Severity::Medium),
        pb::Severity::High => Some(Severity::High),
        pb::Severity::Critical => Some(Severity::Critical),
    }
}

/// The value of a field sent as `value` (the enum's number) and `name` (the string): the enum
/// unless it is 0 (UNSPECIFIED: a peer that sends only the name), else the name parsed (empty:
/// none). A number this release does not know and a name that is none of `T`'s are refused.
fn read<E, T>(
    field: &'static str,
    value: i32,
    name: &str,
    of_pb: impl Fn(E) -> Option<T>,
) -> Result<Option<T>, FieldError>
where
    E: TryFrom<i32>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    if value != 0 {
        let e = E::try_from(value).map_err(|_| FieldError {
            field,
            problem: format!("enum value {value} is not known to this release"),
        })?;
        return Ok(of_pb(e));
    }
    if name.is_empty() {
        return Ok(None);
    }
    name.parse().map(Some).map_err(|e: T::Err| FieldError {
        field,
        problem: e.to_string(),
    })
}

/// The mode of a field pair.
pub fn read_mode(field: &'static str, value: i32, name: &str) -> Result<Option<Mode>, FieldError> {
    read(field, value, name, mode_of_pb)
}

/// The severity of a field pair.
pub fn read_severity(
    field: &'static str,
    value: i32,
    name: &str,
) -> Result<Option<Severity>, FieldError> {
    read(field, value, name, severity_of_pb)
}

/// The enum number of mode name `name`: 0 (UNSPECIFIED) for none, or a name that is no mode
/// (which then travels as the string alone, for the reader to refuse).
pub fn mode_number(name: &str) -> i32 {
    name.parse::<Mode>().map_or(0, |m| mode_pb(m).into())
}

/// Both forms of `m` (none: both empty), as writers fill them.
fn mode_fields(m: Option<Mode>) -> (String, i32) {
    m.map_or((String::new(), 0), |m| (m.to_string(), mode_pb(m).into()))
}

/// For people: the value's name, or the field as it came when it does not read.
fn shown<T: std::fmt::Display>(v: Result<Option<T>, FieldError>, name: &str) -> String {
    match v {
        Ok(Some(v)) => v.to_string(),
        Ok(None) => String::new(),
        Err(_) => name.to_string(),
    }
}

impl pb::Device {
    pub fn mode_value(&self) -> Result<Option<Mode>, FieldError> {
        read_mode("mode", self.mode_enum, &self.mode)
    }

    /// The mode's name for people (`mode_value`, or the string as it came).
    pub fn mode_name(&self) -> String {
        shown(self.mode_value(), &self.mode)
    }

    /// Sets both forms (none: both empty, the profile's default).
    pub fn set_mode(&mut self, m: Option<Mode>) {
        (self.mode, self.mode_enum) = mode_fields(m);
    }
}

impl pb::Alert {
    pub fn mode_value(&self) -> Result<Option<Mode>, FieldError> {
        read_mode("mode", self.mode_enum, &self.mode)
    }

    pub fn mode_name(&self) -> String {
        shown(self.mode_value(), &self.mode)
    }

    pub fn set_mode(&mut self, m: Option<Mode>) {
        (self.mode, self.mode_enum) = mode_fields(m);
    }

    pub fn severity_value(&self) -> Result<Option<Severity>, FieldError> {
        read_severity("severity", self.severity_enum, &self.severity)
    }

    pub fn severity_name(&self) -> String {
        shown(self.severity_value(), &self.severity)
    }

    pub fn set_severity(&mut self, s: Severity) {
        self.severity = s.to_string();
        self.severity_enum = severity_pb(s).into();
    }
}

impl pb::DeviceChange {
    pub fn mode_before_value(&self) -> Result<Option<Mode>, FieldError> {
        read_mode("mode_before", self.mode_before_enum, &self.mode_before)
    }

    pub fn mode_after_value(&self) -> Result<Option<Mode>, FieldError> {
        read_mode("mode_after", self.mode_after_enum, &self.mode_after)
    }

    pub fn mode_before_name(&self) -> String {
        shown(self.mode_before_value(), &self.mode_before)
    }

    pub fn mode_after_name(&self) -> String {
        shown(self.mode_after_value(), &self.mode_after)
    }

    pub fn set_modes(&mut self, before: Option<Mode>, after: Option<Mode>) {
        (self.mode_before, self.mode_before_enum) = mode_fields(before);
        (self.mode_after, self.mode_after_enum) = mode_fields(after);
    }
}

impl pb::SetModeRequest {
    /// The mode asked for; none given is refused.
    pub fn mode_value(&self) -> Result<Mode, FieldError> {
        read_mode("mode", self.mode_enum, &self.mode)?.ok_or(FieldError {
            field: "mode",
            problem: "no mode given (learn, monitor, enforce or quarantine)".into(),
        })
    }

    pub fn set_mode(&mut self, m: Mode) {
        (self.mode, self.mode_enum) = mode_fields(Some(m));
    }
}

impl pb::AlertFilter {
    /// The lowest severity asked for (none: every severity).
    pub fn min_severity_value(&self) -> Result<Option<Severity>, FieldError> {
        read_severity("min_severity", self.min_severity_enum, &self.min_severity)
    }

    pub fn set_min_severity(&mut self, s: Option<Severity>) {
        (self.min_severity, self.min_severity_enum) = match s {
            None => (String::new(), 0),
            Some(s) => (s.to_string(), severity_pb(s).into()),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mode_and_severity_goes_both_ways_in_both_forms() {
        for m in Mode::ALL {
            assert_eq!(mode_of_pb(mode_pb(m)), Some(m));
            let mut d = pb::Device::default();
            d.set_mode(Some(m));
            assert_eq!((d.mode.as_str(), d.mode_enum()), (m.as_str(), mode_pb(m)));
            assert_eq!(d.mode_value(), Ok(Some(m)));
            assert_eq!(mode_number(m.as_str()), i32::from(mode_pb(m)));
            let mut c = pb::DeviceChange::default();
            c.set_modes(None, Some(m));
            assert_eq!(c.mode_before_value(), Ok(None));
            assert_eq!(c.mode_after_value(), Ok(Some(m)));
            assert_eq!((c.mode_before.as_str(), c.mode_before_enum), ("", 0));
        }
        for s in Severity::ALL {
            assert_eq!(severity_of_pb(severity_pb(s)), Some(s));
            let mut a = pb::Alert::default();
            a.set_severity(s);
            assert_eq!(a.severity, s.to_string());
            assert_eq!(a.severity_value(), Ok(Some(s)));
            assert_eq!(a.severity_name(), s.as_str());
        }
        assert_eq!(mode_of_pb(pb::DeviceMode::Unspecified), None);
        assert_eq!(severity_of_pb(pb::Severity::Unspecified), None);
        assert_eq!(mode_number(""), 0);
        assert_eq!(mode_number("lockdown"), 0);
    }

    #[test]
    fn a_0_1_0_peer_sends_the_string_alone_and_is_read() {
        // Encoded as a 0.1.0 peer does: no enum fields at all.
        let old = pb::Alert {
            severity: "critical".into(),
            mode: "quarantine".into(),
            ..Default::default()
        };
        let bytes = prost::Message::encode_to_vec(&old);
        let got: pb::Alert = prost::Message::decode(bytes.as_slice()).unwrap();
        assert_eq!(got.severity_enum, 0, "UNSPECIFIED");
        assert_eq!(got.severity_value(), Ok(Some(Severity::Critical)));
        assert_eq!(got.mode_value(), Ok(Some(Mode::Quarantine)));
        let d = pb::Device {
            mode: "monitor".into(),
            ..Default::default()
        };
        assert_eq!(d.mode_value(), Ok(Some(Mode::Monitor)));
        assert_eq!(pb::Device::default().mode_value(), Ok(None));
        // A new writer fills both, so a 0.1.0 reader (the string alone) reads it too.
        let mut new = pb::Alert::default();
        new.set_severity(Severity::Medium);
        new.set_mode(Some(Mode::Enforce));
        assert_eq!(
            (new.severity.as_str(), new.mode.as_str()),
            ("medium", "enforce")
        );
    }

    #[test]
    fn requests_carry_the_mode_and_the_minimum_severity_both_ways() {
        for m in Mode::ALL {
            let mut r = pb::SetModeRequest::default();
            r.set_mode(m);
            assert_eq!((r.mode.as_str(), r.mode_enum()), (m.as_str(), mode_pb(m)));
            assert_eq!(r.mode_value(), Ok(m));
            // A 0.1.0 client: the name alone.
            let old = pb::SetModeRequest {
                mode: m.to_string(),
                ..Default::default()
            };
            assert_eq!(old.mode_value(), Ok(m));
        }
        let none = pb::SetModeRequest::default().mode_value().unwrap_err();
        assert_eq!(none.field, "mode");
        for s in Severity::ALL {
            let mut f = pb::AlertFilter::default();
            f.set_min_severity(Some(s));
            assert_eq!(f.min_severity, s.as_str());
            assert_eq!(f.min_severity_value(), Ok(Some(s)));
        }
        let mut f = pb::AlertFilter::default();
        f.set_min_severity(None);
        assert_eq!((f.min_severity.as_str(), f.min_severity_enum), ("", 0));
        assert_eq!(f.min_severity_value(), Ok(None));
        f.min_severity_enum = 99;
        assert_eq!(f.min_severity_value().unwrap_err().field, "min_severity");
    }

    #[test]
    fn the_enum_wins_over_the_string() {
        let a = pb::Alert {
            severity: "low".into(),
            severity_enum: pb::Severity::High.into(),
            ..Default::default()
        };
        assert_eq!(a.severity_value(), Ok(Some(Severity::High)));
        assert_eq!(a.severity_name(), "high");
    }

    #[test]
    fn an_unknown_name_or_number_is_invalid_argument_naming_the_field() {
        let d = pb::Device {
            mode: "lockdown".into(),
            ..Default::default()
        };
        let e = d.mode_value().unwrap_err();
        assert_eq!(e.field, "mode");
        assert_eq!(d.mode_name(), "lockdown", "shown as it came");
        let status = tonic::Status::from(e);
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status.message().starts_with("mode: ") && status.message().contains("lockdown"),
            "{}",
            status.message()
        );
        let c = pb::DeviceChange {
            mode_after_enum: 77,
            ..Default::default()
        };
        let e = c.mode_after_value().unwrap_err();
        assert_eq!(e.field, "mode_after");
        assert!(e.to_string().contains("77"), "{e}");
        let a = pb::Alert {
            severity: "urgent".into(),
            ..Default::default()
        };
        let status = tonic::Status::from(a.severity_value().unwrap_err());
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status.message().starts_with("severity: "),
            "{}",
            status.message()
        );
    }
}
