//! The issue 15 options applied around the session engine, so the engine's offer/answer/delete
//! paths each need one call here: SDP edits before (loop protection, media address) and after
//! (codec filtering, loop marker), labels and Via branches per call, the session limit.

use std::collections::BTreeMap;
use std::net::IpAddr;

use relay_core::call_options::MediaOptions;
use relay_core::codecs::{self, CodecOptions};
use relay_core::sdp::Sdp;
use relay_core::sdp_edit;
use serde_json::{Map, Value, json};

/// What to do with an incoming SDP before the session engine sees it.
#[derive(Debug, PartialEq, Eq)]
pub enum Pre {
    /// `loop protect` and the SDP carries our marker: answer with it unchanged, touch nothing.
    PassThrough(String),
    /// Hand this SDP to the engine (edited if `media address` / `SIP source address` said so).
    Process(String),
}

/// Before `offer`/`answer`: loop protection and the endpoint address override.
pub fn pre(sdp: &str, opts: &MediaOptions, received_from: Option<IpAddr>, instance: &str) -> Pre {
    let Ok(mut parsed) = Sdp::parse(sdp) else {
        // The engine reports the parse error in rtpengine's words.
        return Pre::Process(sdp.to_owned());
    };
    if opts.loop_protect && sdp_edit::is_own(&parsed, instance) {
        return Pre::PassThrough(sdp.to_owned());
    }
    match opts.endpoint_override(received_from) {
        Some(ip) if sdp_edit::override_connection(&mut parsed, ip) => {
            Pre::Process(parsed.to_string())
        }
        _ => Pre::Process(sdp.to_owned()),
    }
}

/// After the engine rewrote the SDP: codec filtering and the loop marker. Returns the SDP and
/// warnings for the reply (refused options); codec notes (a strip that would leave nothing) are
/// only logged, as rtpengine does.
pub fn post(
    sdp: String,
    codecs: &CodecOptions,
    offer: bool,
    opts: &MediaOptions,
    instance: &str,
) -> (String, Vec<String>) {
    let mut warnings = Vec::new();
    if opts.always_transcode {
        warnings.push(
            "always-transcode refused: this relay does not transcode; codecs pass unchanged"
                .to_owned(),
        );
    }
    if codecs.is_empty() && !opts.loop_protect {
        return (sdp, warnings);
    }
    let Ok(mut parsed) = Sdp::parse(&sdp) else {
        return (sdp, warnings);
    };
    for note in codecs::apply(&mut parsed, codecs, offer) {
        tracing::info!(%note, "codec options");
    }
    if opts.loop_protect {
        sdp_edit::mark(&mut parsed, instance);
    }
    (parsed.to_string(), warnings)
}

/// The codec options an answer gets from its offer: what the offer stripped or masked stays
/// out of the answer (rtpengine answers only with codecs it offered), unless the answer keeps
/// nothing; `offer`/`except` codecs stay in.
pub fn answer_codecs(offer: &CodecOptions, answer: &CodecOptions) -> CodecOptions {
    let mut c = answer.clone();
    c.strip.extend(offer.strip.iter().cloned());
    c.strip.extend(offer.mask.iter().cloned());
    c.except.extend(offer.except.iter().cloned());
    c.except.extend(offer.offer.iter().cloned());
    c
}

/// Labels and Via branches of one call's participants (tags).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Names {
    /// tag -> label.
    pub labels: BTreeMap<String, String>,
    /// tag -> the Via branch it was last seen with.
    pub branches: BTreeMap<String, String>,
    /// The codec options of the last offer, for its answer.
    #[serde(skip)]
    pub offer_codecs: CodecOptions,
    /// The TOS byte forwarded packets of this call get (None: left as sent).
    pub tos: Option<u8>,
}

impl Names {
    pub fn note(&mut self, tag: &str, opts: &MediaOptions) {
        if let Some(l) = &opts.label {
            self.labels.insert(tag.to_owned(), l.clone());
        }
        if let Some(b) = &opts.via_branch {
            self.branches.insert(tag.to_owned(), b.clone());
        }
    }

    /// The tag labelled `label`.
    pub fn tag_of(&self, label: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(_, l)| *l == label)
            .map(|(t, _)| t.as_str())
    }

    /// The tag last seen with Via branch `branch`, other than `except`.
    pub fn tag_of_branch(&self, branch: &str, except: &str) -> Option<&str> {
        self.branches
            .iter()
            .find(|(t, b)| *b == branch && *t != except)
            .map(|(t, _)| t.as_str())
    }

    /// Adds `label` to the query reply's tag dictionaries (rtpengine's `tags.TAG.label`).
    pub fn annotate(&self, reply: &mut Map<String, Value>) {
        let Some(Value::Object(tags)) = reply.get_mut("tags") else {
            return;
        };
        for (tag, t) in tags.iter_mut() {
            let Value::Object(t) = t else { continue };
            if let Some(l) = self.labels.get(tag) {
                t.insert("label".into(), l.clone().into());
            }
            if let Some(b) = self.branches.get(tag) {
                t.insert("via-branch".into(), b.clone().into());
            }
        }
    }
}

/// rtpengine's session limit: None when the new call may be created, else the reply. With
/// `supports: ["load limit"]` the reply is `result: load limit` (Kamailio then tries another
/// relay); otherwise an error naming the reason, as rtpengine's legacy protocol does.
pub fn load_limit(calls: usize, max: Option<u64>, supports: bool) -> Option<Map<String, Value>> {
    let max = max?;
    if (calls as u64) < max {
        return None;
    }
    const REASON: &str = "Parallel session limit reached";
    let v = if supports {
        json!({"result": "load limit", "message": REASON})
    } else {
        json!({"result": "error", "error-reason": format!("{REASON} ({max} calls, --max-sessions)")})
    };
    match v {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SDP: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 8\r\na=rtpmap:8 PCMA/8000\r\n";

    #[test]
    fn loop_protect_passes_our_own_sdp_through() {
        let opts = MediaOptions {
            loop_protect: true,
            ..Default::default()
        };
        let (out, w) = post(SDP.to_owned(), &CodecOptions::default(), true, &opts, "abc");
        assert!(w.is_empty() && out.contains("a=rtpengine:abc\r\n"));
        assert_eq!(pre(&out, &opts, None, "abc"), Pre::PassThrough(out.clone()));
        assert_eq!(pre(&out, &opts, None, "other"), Pre::Process(out.clone()));
        assert_eq!(pre(SDP, &opts, None, "abc"), Pre::Process(SDP.to_owned()));
    }

    #[test]
    fn sip_source_and_media_address_replace_the_endpoint() {
        let rf = Some("10.1.1.2".parse().unwrap());
        let mut opts = MediaOptions {
            sip_source_address: true,
            ..Default::default()
        };
        let Pre::Process(s) = pre(SDP, &opts, rf, "x") else {
            panic!()
        };
        assert!(s.contains("c=IN IP4 10.1.1.2\r\n") && s.contains("o=- 1 1 IN IP4 192.0.2.9"));
        opts.media_address = Some("10.1.1.7".parse().unwrap());
        let Pre::Process(s) = pre(SDP, &opts, rf, "x") else {
            panic!()
        };
        assert!(s.contains("c=IN IP4 10.1.1.7\r\n"));
        assert_eq!(
            pre(SDP, &MediaOptions::default(), rf, "x"),
            Pre::Process(SDP.into())
        );
    }

    #[test]
    fn codecs_and_answers_follow_the_offer() {
        let strip = CodecOptions {
            strip: vec!["PCMA".into()],
            ..Default::default()
        };
        let (out, _) = post(SDP.into(), &strip, true, &MediaOptions::default(), "x");
        assert!(out.contains("m=audio 4000 RTP/AVP 0\r\n") && !out.contains("PCMA"));
        let a = answer_codecs(&strip, &CodecOptions::default());
        let (out, _) = post(SDP.into(), &a, false, &MediaOptions::default(), "x");
        assert!(out.contains("m=audio 4000 RTP/AVP 0\r\n"));
        let none = CodecOptions {
            strip: vec!["all".into()],
            ..Default::default()
        };
        let (out, w) = post(SDP.into(), &none, true, &MediaOptions::default(), "x");
        assert_eq!(out, SDP);
        assert!(w.is_empty());
        let t = MediaOptions {
            always_transcode: true,
            ..Default::default()
        };
        let (out, w) = post(SDP.into(), &CodecOptions::default(), true, &t, "x");
        assert_eq!(out, SDP);
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn labels_branches_and_the_session_limit() {
        let mut n = Names::default();
        n.note(
            "A",
            &MediaOptions {
                label: Some("caller".into()),
                via_branch: Some("b1".into()),
                ..Default::default()
            },
        );
        assert_eq!(n.tag_of("caller"), Some("A"));
        assert_eq!(n.tag_of_branch("b1", "B"), Some("A"));
        assert_eq!(n.tag_of_branch("b1", "A"), None);
        let mut q = json!({"tags": {"A": {"tag": "A"}, "B": {"tag": "B"}}})
            .as_object()
            .unwrap()
            .clone();
        n.annotate(&mut q);
        assert_eq!(q["tags"]["A"]["label"], "caller");
        assert!(q["tags"]["B"].get("label").is_none());
        assert_eq!(load_limit(5, None, true), None);
        assert_eq!(load_limit(1, Some(2), false), None);
        assert_eq!(
            load_limit(2, Some(2), true).unwrap()["result"],
            "load limit"
        );
        let e = load_limit(2, Some(2), false).unwrap();
        assert_eq!(e["result"], "error");
        assert!(
            e["error-reason"]
                .as_str()
                .unwrap()
                .starts_with("Parallel session limit reached")
        );
    }
}
