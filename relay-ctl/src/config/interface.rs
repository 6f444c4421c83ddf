//! Logical interfaces as operators write them: rtpengine's `NAME/ADDRESS[!ADVERTISED]`.

use super::{ConfigError, LogicalInterface};

/// Parses rtpengine's `NAME/ADDRESS[!ADVERTISED]` with relay-core's parser, then applies the
/// checks an operator needs on top: a plain name and a unicast bind address.
pub fn parse_interface(spec: &str) -> Result<LogicalInterface, ConfigError> {
    let err = |why: &str| ConfigError::Interface {
        spec: spec.to_owned(),
        why: why.to_owned(),
    };
    let li: LogicalInterface = spec
        .parse()
        .map_err(|e: relay_core::session::SessionError| err(&e.to_string()))?;
    if !li
        .name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(err(
            "the name must be ASCII letters, digits, '-', '_' or '.'",
        ));
    }
    if li.bind.is_unspecified() || li.bind.is_multicast() {
        return Err(err(
            "the bind address must be a unicast address of this host",
        ));
    }
    Ok(li)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_specs() {
        let li = parse_interface("pub/192.0.2.1!203.0.113.7").unwrap();
        assert_eq!(li.name, "pub");
        assert_eq!(li.bind.to_string(), "192.0.2.1");
        assert_eq!(li.advertised.to_string(), "203.0.113.7");
        let li = parse_interface("2001:db8::1").unwrap();
        assert_eq!((li.name.as_str(), li.advertised), ("default", li.bind));
        for bad in [
            "pub/",
            "pub/1.2.3",
            "/192.0.2.1",
            "pub/0.0.0.0",
            "pub/192.0.2.1!2001:db8::1",
            "pub/192.0.2.1!x",
            "p b/192.0.2.1",
            "pub/224.0.0.1",
        ] {
            assert!(parse_interface(bad).is_err(), "{bad} accepted");
        }
    }
}
