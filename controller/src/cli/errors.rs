//! wardctl's errors for people: what went wrong in one line, without gRPC's status codes or
//! the transport's internals, and the flag that fixes it where there is one. Scripts read the
//! exit status (1 on any error); the JSON output is unchanged.

use std::io::ErrorKind;

/// The error as one line: each context, then what the server said (its message, not
/// "status: NotFound, message: ...") or, for a connection, why it failed in words.
pub fn plain(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        if let Some(s) = cause.downcast_ref::<tonic::Status>() {
            parts.push(status(s));
            break;
        }
        if let Some(hint) = cause
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io_hint(io.kind()))
        {
            parts.push(hint.to_string());
            break;
        }
        let text = cause.to_string();
        // Transport layers repeat or wrap one another ("transport error"): keep what adds.
        if text == "transport error" || parts.last().is_some_and(|p| p.contains(&text)) {
            continue;
        }
        parts.push(text);
    }
    parts.join(": ")
}

fn status(s: &tonic::Status) -> String {
    use tonic::Code;
    let msg = s.message().trim();
    match s.code() {
        Code::Unauthenticated => format!(
            "the controller did not accept this certificate ({msg}); check --as and --certs"
        ),
        Code::PermissionDenied => format!("not allowed for this identity: {msg}"),
        Code::Unavailable if msg.is_empty() => {
            "the controller is unavailable; try again shortly".to_string()
        }
        _ if msg.is_empty() => format!("the controller answered {:?} without a message", s.code()),
        _ => msg.to_string(),
    }
}

fn io_hint(kind: ErrorKind) -> Option<&'static str> {
    match kind {
        ErrorKind::ConnectionRefused => Some(
            "nothing accepts connections there: is the controller running, and is \
             --controller (WARDGATE_CONTROLLER) its address?",
        ),
        ErrorKind::TimedOut => Some(
            "the controller did not answer in time: check --controller (WARDGATE_CONTROLLER) \
             and the network path",
        ),
        ErrorKind::NotFound => Some("no such file"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use anyhow::Context as _;

    use super::*;

    #[test]
    fn a_server_answer_is_its_message_after_the_context() {
        let e = anyhow::Error::new(tonic::Status::not_found("device `pump-9` not found"))
            .context("showing pump-9");
        assert_eq!(plain(&e), "showing pump-9: device `pump-9` not found");
    }

    #[test]
    fn a_refused_connection_names_the_flag() {
        let io = std::io::Error::from(ErrorKind::ConnectionRefused);
        let e = Err::<(), _>(io)
            .context("connecting to https://localhost:7443")
            .unwrap_err();
        let p = plain(&e);
        assert!(
            p.starts_with("connecting to https://localhost:7443: nothing accepts"),
            "{p}"
        );
        assert!(p.contains("--controller"), "{p}");
    }

    #[test]
    fn a_missing_certificate_names_the_flags() {
        let io = std::io::Error::from(ErrorKind::NotFound);
        let e = Err::<(), _>(io)
            .context(super::super::remote::certificate_context(
                std::path::Path::new("/etc/wardgate/certs/user-admin.pem"),
            ))
            .unwrap_err();
        let p = plain(&e);
        assert!(p.contains("user-admin.pem"), "{p}");
        assert!(p.ends_with("no such file"), "{p}");
        assert!(p.contains("--as") && p.contains("--certs"), "{p}");
    }
}
