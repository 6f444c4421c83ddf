//! Operator subcommands: build an NG request from arguments, call the daemon, print an aligned
//! table for people or JSON for scripts.

use std::{io::Read as _, net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{Context as _, Result, bail};
use serde_json::{Map, Value, json};

use crate::client::NgClient;

/// Options of every subcommand that talks to the daemon.
#[derive(clap::Args, Debug, Clone)]
pub struct Common {
    /// NG control address of the daemon.
    #[arg(long, default_value = "127.0.0.1:2223", value_name = "ADDR")]
    pub ng: SocketAddr,
    /// Seconds to wait for each NG reply (tried three times).
    #[arg(long, default_value_t = 2.0, value_name = "SECS")]
    pub reply_timeout: f64,
    /// Print the reply as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `relay-ctl top`.
#[derive(clap::Args, Debug, Clone)]
pub struct TopArgs {
    /// NG control address of the daemon.
    #[arg(long, default_value = "127.0.0.1:2223", value_name = "ADDR")]
    pub ng: SocketAddr,
    /// Seconds to wait for each NG reply (tried three times).
    #[arg(long, default_value_t = 2.0, value_name = "SECS")]
    pub reply_timeout: f64,
    /// Seconds between refreshes (and between the two samples of --once).
    #[arg(long, default_value_t = 1.0, value_name = "SECS")]
    pub interval: f64,
    /// Print one frame as plain text and exit (for scripts).
    #[arg(long)]
    pub once: bool,
}

/// Options shared by offer and answer, named as rtpengine's NG keys.
#[derive(clap::Args, Debug)]
pub struct MediaArgs {
    /// Call-ID (taken from the message with --sip).
    #[arg(long)]
    pub call_id: Option<String>,
    /// From-tag (taken from the message with --sip).
    #[arg(long)]
    pub from_tag: Option<String>,
    /// SDP file, or - for standard input.
    #[arg(long, default_value = "-", conflicts_with = "sip")]
    pub sdp: PathBuf,
    /// A whole SIP message (file, or - for standard input): its SDP body is sent, and the
    /// message is printed back with the rewritten body and Content-Length.
    #[arg(long)]
    pub sip: Option<PathBuf>,
    /// ICE handling: remove, force, default, optional.
    #[arg(long)]
    pub ice: Option<String>,
    /// rtcp-mux handling (repeatable): offer, demux, accept, reject, require.
    #[arg(long = "rtcp-mux")]
    pub rtcp_mux: Vec<String>,
    /// NG flags (repeatable): trust-address, symmetric, asymmetric, strict-source, media-handover, port-latching.
    #[arg(long = "flag")]
    pub flags: Vec<String>,
    /// replace (repeatable): origin, session-connection.
    #[arg(long)]
    pub replace: Vec<String>,
    /// Logical interfaces, from-side then to-side (give twice).
    #[arg(long)]
    pub direction: Vec<String>,
    /// Address the SIP message came from (NG `received from`).
    #[arg(long)]
    pub received_from: Option<std::net::IpAddr>,
    /// IP4 or IP6: address family of the rewritten SDP.
    #[arg(long)]
    pub address_family: Option<String>,
}

fn client(c: &Common) -> Result<NgClient> {
    ng_client(c.ng, c.reply_timeout)
}

pub(crate) fn ng_client(ng: SocketAddr, reply_timeout: f64) -> Result<NgClient> {
    if !(reply_timeout.is_finite() && reply_timeout > 0.0) {
        bail!("--reply-timeout must be a positive number of seconds");
    }
    Ok(NgClient::new(
        ng,
        Duration::from_secs_f64(reply_timeout),
        3,
    )?)
}

pub(crate) fn request(command: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("command".into(), command.into());
    m
}

fn read_input(path: &PathBuf) -> Result<Vec<u8>> {
    let mut s = Vec::new();
    if path.as_os_str() == "-" {
        std::io::stdin()
            .read_to_end(&mut s)
            .context("reading standard input")?;
    } else {
        s = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    }
    Ok(s)
}

/// Where the SDP and the dialog identifiers come from.
struct Input {
    sdp: String,
    call_id: String,
    from_tag: String,
    to_tag: Option<String>,
    /// The whole SIP message, when given with --sip.
    sip: Option<Vec<u8>>,
}

fn input(a: &MediaArgs, to_tag: Option<&str>) -> Result<Input> {
    let explicit = |v: &Option<String>, what: &str| {
        v.clone().with_context(|| {
            format!("--{what} is required (or give a whole SIP message with --sip)")
        })
    };
    let Some(path) = &a.sip else {
        let sdp = String::from_utf8(read_input(&a.sdp)?).context("the SDP is not UTF-8")?;
        return Ok(Input {
            sdp,
            call_id: explicit(&a.call_id, "call-id")?,
            from_tag: explicit(&a.from_tag, "from-tag")?,
            to_tag: to_tag.map(str::to_owned),
            sip: None,
        });
    };
    let raw = read_input(path)?;
    let msg = relay_core::sip::SipMessage::parse(&raw).context("parsing the SIP message")?;
    let sdp = msg
        .sdp()
        .context("the SIP message has no SDP body")?
        .to_owned();
    let from_tag = match (&a.from_tag, msg.from_tag()) {
        (Some(t), _) => t.clone(),
        (None, Some(t)) => t.to_owned(),
        (None, None) => bail!("the SIP message's From has no tag; give --from-tag"),
    };
    let call_id = a
        .call_id
        .clone()
        .unwrap_or_else(|| msg.call_id().to_owned());
    let to_tag = to_tag
        .map(str::to_owned)
        .or_else(|| msg.to_tag().map(str::to_owned));
    Ok(Input {
        sdp,
        call_id,
        from_tag,
        to_tag,
        sip: Some(raw),
    })
}

fn media_request(command: &str, a: &MediaArgs, inp: &Input) -> Result<Map<String, Value>> {
    let mut r = request(command);
    r.insert("call-id".into(), inp.call_id.clone().into());
    r.insert("from-tag".into(), inp.from_tag.clone().into());
    if let Some(t) = &inp.to_tag {
        r.insert("to-tag".into(), t.clone().into());
    } else if command == "answer" {
        bail!("an answer needs the callee's tag: --to-tag, or a SIP message whose To has a tag");
    }
    r.insert("sdp".into(), inp.sdp.clone().into());
    if let Some(ice) = &a.ice {
        r.insert("ICE".into(), ice.clone().into());
    }
    for (key, list) in [
        ("rtcp-mux", &a.rtcp_mux),
        ("flags", &a.flags),
        ("replace", &a.replace),
        ("direction", &a.direction),
    ] {
        if !list.is_empty() {
            r.insert(key.into(), json!(list));
        }
    }
    if let Some(ip) = a.received_from {
        let fam = if ip.is_ipv4() { "IP4" } else { "IP6" };
        r.insert("received from".into(), json!([fam, ip.to_string()]));
    }
    if let Some(f) = &a.address_family {
        r.insert("address family".into(), f.clone().into());
    }
    Ok(r)
}

pub fn ping(c: &Common) -> Result<()> {
    let reply = client(c)?.call(&request("ping"))?;
    print_or(c, &reply, || {
        println!(
            "{}",
            reply.get("result").and_then(Value::as_str).unwrap_or("?")
        )
    });
    Ok(())
}

pub fn offer_answer(c: &Common, command: &str, a: &MediaArgs, to_tag: Option<&str>) -> Result<()> {
    let inp = input(a, to_tag)?;
    let reply = client(c)?.call(&media_request(command, a, &inp)?)?;
    let sdp = reply.get("sdp").and_then(Value::as_str).unwrap_or_default();
    if c.json {
        print_or(c, &reply, || ());
    } else if let Some(raw) = &inp.sip {
        let out = relay_core::sip::rewrite_body(raw, |_| {
            Ok::<_, std::convert::Infallible>(sdp.to_owned())
        })
        .context("putting the rewritten SDP back into the SIP message")?;
        use std::io::Write as _;
        std::io::stdout().write_all(&out)?;
    } else {
        print!("{sdp}");
    }
    Ok(())
}

pub fn delete(
    c: &Common,
    call_id: &str,
    from_tag: Option<&str>,
    to_tag: Option<&str>,
) -> Result<()> {
    let mut r = request("delete");
    r.insert("call-id".into(), call_id.into());
    // An operator's delete of a call that is not there is an error (exit 1), not the warning a
    // SIP proxy gets by default.
    r.insert("flags".into(), json!(["fatal"]));
    if let Some(t) = from_tag {
        r.insert("from-tag".into(), t.into());
    }
    if let Some(t) = to_tag {
        r.insert("to-tag".into(), t.into());
    }
    let reply = client(c)?.call(&r)?;
    print_or(c, &reply, || println!("deleted {call_id}"));
    Ok(())
}

pub fn list(c: &Common) -> Result<()> {
    let reply = client(c)?.call(&request("list"))?;
    print_or(c, &reply, || {
        for id in reply
            .get("calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            println!("{}", id.as_str().unwrap_or_default());
        }
    });
    Ok(())
}

pub fn show(c: &Common, call_id: &str) -> Result<()> {
    let mut r = request("query");
    r.insert("call-id".into(), call_id.into());
    let reply = client(c)?.call(&r)?;
    print_or(c, &reply, || print!("{}", query_table(call_id, &reply)));
    Ok(())
}

/// Takes over every foreign call whose media addresses are on this host (standby takeover).
pub fn takeover(c: &Common) -> Result<()> {
    let reply = client(c)?.call(&request("takeover"))?;
    print_or(c, &reply, || {
        println!(
            "taken over: {} calls; foreign calls left: {}",
            reply.get("taken over").unwrap_or(&Value::Null),
            reply.get("foreign left").unwrap_or(&Value::Null)
        );
    });
    Ok(())
}

pub fn statistics(c: &Common) -> Result<Map<String, Value>> {
    Ok(client(c)?.call(&request("statistics"))?)
}

fn print_or(c: &Common, reply: &Map<String, Value>, human: impl FnOnce()) {
    if c.json {
        println!(
            "{}",
            serde_json::to_string_pretty(reply).unwrap_or_default()
        );
    } else {
        human();
    }
}

pub(crate) fn s(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Object(o)) if o.contains_key("address") => {
            format!("{}:{}", s(o.get("address")), s(o.get("port")))
        }
        Some(Value::Array(a)) => a.iter().map(|v| s(Some(v))).collect::<Vec<_>>().join(","),
        _ => "-".into(),
    }
}

/// Epoch seconds (rtpengine's `created`, `last packet`) as UTC for people; 0 or absent: "-".
fn utc(v: Option<&Value>) -> String {
    let Some(t) = v.and_then(Value::as_u64) else {
        return s(v);
    };
    if t == 0 {
        return "-".into();
    }
    // Days to a civil date (H. Hinnant's algorithm), proleptic Gregorian.
    let (days, secs) = ((t / 86_400) as i64, t % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// The query reply as a table: one row per stream, under its leg (tag) and media.
pub fn query_table(call_id: &str, reply: &Map<String, Value>) -> String {
    let mut rows = vec![
        [
            "TAG",
            "MEDIA",
            "LOCAL",
            "PEER",
            "ICE",
            "PACKETS",
            "BYTES",
            "LAST-SEEN",
            "FORWARDING",
        ]
        .map(String::from),
    ];
    let tags = reply.get("tags").and_then(Value::as_object);
    for (tag, leg) in tags.into_iter().flatten() {
        let medias = leg.get("medias").and_then(Value::as_array);
        for m in medias.into_iter().flatten() {
            let media = format!("{} {}", s(m.get("index")), s(m.get("type")));
            for st in m
                .get("streams")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let stats = st.get("stats");
                rows.push([
                    tag.clone(),
                    media.clone(),
                    s(st.get("local endpoint").or(st.get("local port"))),
                    s(st.get("endpoint")),
                    s(st.get("ICE").or(m.get("ICE"))),
                    s(stats.and_then(|x| x.get("packets"))),
                    s(stats.and_then(|x| x.get("bytes"))),
                    utc(st.get("last packet")),
                    st.get("forwarding")
                        .and_then(Value::as_str)
                        .unwrap_or("-")
                        .to_owned(),
                ]);
            }
        }
    }
    let widths: Vec<usize> = (0..9)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = format!("call {call_id}  created {}\n", utc(reply.get("created")));
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    // Which hook the fast path runs on each device (the streams' packets above are counted
    // by whichever one their frames crossed).
    let paths: Vec<String> = reply
        .get("datapath")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|d| {
            let state = s(d.get("state"));
            let gone = if state == "gone" { " (gone)" } else { "" };
            format!("{} {}{gone}", s(d.get("device")), s(d.get("datapath")))
        })
        .collect();
    if !paths.is_empty() {
        out.push_str(&format!("datapath: {}\n", paths.join(", ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_seconds_print_as_utc() {
        let t = |n: u64| utc(Some(&Value::from(n)));
        assert_eq!(t(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(t(1_709_164_799), "2024-02-28T23:59:59Z");
        assert_eq!(t(1_795_293_073), "2026-11-21T20:31:13Z");
        assert_eq!(t(0), "-");
        assert_eq!(utc(None), "-");
    }

    #[test]
    fn query_table_aligns_one_row_per_stream() {
        let reply: Map<String, Value> = serde_json::from_str(
            r#"{"result":"ok","created":1700000000,"tags":{"a1":{"medias":[{"index":1,"type":"audio","streams":[
              {"local port":30000,"endpoint":{"family":"IPv4","address":"10.1.1.2","port":4000},"stats":{"packets":12,"bytes":2064},"last packet":1700000005,"forwarding":"fast path"},
              {"local port":30001,"stats":{"packets":1,"bytes":80}}]}]}}}"#,
        )
        .unwrap();
        let t = query_table("c1", &reply);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "call c1  created 2023-11-14T22:13:20Z");
        assert!(lines[1].starts_with("TAG  MEDIA    LOCAL  PEER"), "{t}");
        assert_eq!(
            lines[2],
            "a1   1 audio  30000  10.1.1.2:4000  -    12       2064   2023-11-14T22:13:25Z  fast path"
        );
        assert_eq!(
            lines[3],
            "a1   1 audio  30001  -              -    1        80     -                     -"
        );
    }
}
