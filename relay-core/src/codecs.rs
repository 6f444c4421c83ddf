//! Codec filtering of RTP m= sections, rtpengine's `codec` dictionary (`strip`, `mask`, `except`,
//! `offer`, `accept`, `transcode`) without transcoding: payload types are removed from the m=
//! format list together with their `a=rtpmap`, `a=fmtp` and `a=rtcp-fb` lines; every other line is
//! kept byte for byte (the lossless model of [`crate::sdp`]).
//!
//! - `strip`: remove these codecs (`all` or `full`: every codec not listed in `except`/`offer`).
//! - `mask`: the same in an offer (rtpengine would still accept the codec from the offerer for
//!   transcoding; with no transcoding the outgoing SDP is all that changes). Ignored in answers.
//! - `except`: codecs `strip=all`/`mask=all` keep.
//! - `offer`: like `except`, and the listed codecs move to the front in the order given.
//! - `accept`, `transcode`: need transcoding; nothing is removed or added, a warning says why.
//!
//! A codec is a name (`PCMA`, case-insensitive as MIME subtypes are), optionally with clock rate
//! and channels (`opus/48000/2`, all given parameters must match), or a payload type number.
//! Static payload types without `a=rtpmap` are known by their RFC 3551 names. As in rtpengine,
//! stripping every codec of a section is refused: that section is left unchanged (a warning).

use crate::sdp::{Line, Sdp};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CodecOptions {
    pub strip: Vec<String>,
    pub mask: Vec<String>,
    pub except: Vec<String>,
    pub offer: Vec<String>,
    pub accept: Vec<String>,
    pub transcode: Vec<String>,
}

impl CodecOptions {
    pub fn is_empty(&self) -> bool {
        self.strip.is_empty()
            && self.mask.is_empty()
            && self.except.is_empty()
            && self.offer.is_empty()
            && self.accept.is_empty()
            && self.transcode.is_empty()
    }
}

/// One payload type of an m= line.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Format {
    pt: String,
    name: String,
    clock: Option<u32>,
    channels: Option<u32>,
}

/// RFC 3551 static payload types (audio and video) that may appear without a=rtpmap.
fn static_codec(pt: &str) -> Option<(&'static str, u32, u32)> {
    Some(match pt {
        "0" => ("PCMU", 8000, 1),
        "3" => ("GSM", 8000, 1),
        "4" => ("G723", 8000, 1),
        "5" => ("DVI4", 8000, 1),
        "6" => ("DVI4", 16000, 1),
        "7" => ("LPC", 8000, 1),
        "8" => ("PCMA", 8000, 1),
        "9" => ("G722", 8000, 1),
        "10" => ("L16", 44100, 2),
        "11" => ("L16", 44100, 1),
        "12" => ("QCELP", 8000, 1),
        "13" => ("CN", 8000, 1),
        "14" => ("MPA", 90000, 1),
        "15" => ("G728", 8000, 1),
        "16" => ("DVI4", 11025, 1),
        "17" => ("DVI4", 22050, 1),
        "18" => ("G729", 8000, 1),
        "25" => ("CelB", 90000, 1),
        "26" => ("JPEG", 90000, 1),
        "28" => ("nv", 90000, 1),
        "31" => ("H261", 90000, 1),
        "32" => ("MPV", 90000, 1),
        "33" => ("MP2T", 90000, 1),
        "34" => ("H263", 90000, 1),
        _ => return None,
    })
}

impl Format {
    fn matches(&self, spec: &str) -> bool {
        if spec.eq_ignore_ascii_case("all") || spec.eq_ignore_ascii_case("full") {
            return true;
        }
        if spec.bytes().all(|b| b.is_ascii_digit()) {
            return spec == self.pt;
        }
        let mut it = spec.split('/');
        let name = it.next().unwrap_or("");
        if !name.eq_ignore_ascii_case(&self.name) {
            return false;
        }
        let want = |s: Option<&str>, have: Option<u32>, default: Option<u32>| match s {
            None | Some("") => true,
            Some(s) => s.parse::<u32>().ok() == have.or(default),
        };
        want(it.next(), self.clock, None) && want(it.next(), self.channels, Some(1))
    }
}

fn any_match(f: &Format, specs: &[String]) -> bool {
    specs.iter().any(|s| f.matches(s))
}

/// `a=rtpmap:`, `a=fmtp:` or `a=rtcp-fb:` line naming payload type `pt`.
fn pt_attr(l: &Line) -> Option<&str> {
    let (name, value) = l.attr()?;
    if !["rtpmap", "fmtp", "rtcp-fb"]
        .iter()
        .any(|n| name.eq_ignore_ascii_case(n))
    {
        return None;
    }
    value?.split([' ', '\t']).next()
}

fn formats(section: &[Line]) -> Option<(String, Vec<Format>)> {
    let m = section.first()?.value();
    let mut it = m.split(' ');
    let head: Vec<&str> = it.by_ref().take(3).collect();
    if head.len() < 3 || !head[2].to_ascii_uppercase().contains("RTP") {
        return None;
    }
    let mut out = Vec::new();
    for pt in it.filter(|s| !s.is_empty()) {
        let rtpmap = section.iter().find_map(|l| match l.attr() {
            Some((n, Some(v))) if n.eq_ignore_ascii_case("rtpmap") => {
                let (p, enc) = v.split_once(' ')?;
                (p == pt).then(|| enc.trim().to_owned())
            }
            _ => None,
        });
        let f = match rtpmap {
            Some(enc) => {
                let mut p = enc.split('/');
                Format {
                    pt: pt.to_owned(),
                    name: p.next().unwrap_or("").to_owned(),
                    clock: p.next().and_then(|c| c.parse().ok()),
                    channels: p.next().and_then(|c| c.parse().ok()),
                }
            }
            None => match static_codec(pt) {
                Some((n, c, ch)) => Format {
                    pt: pt.to_owned(),
                    name: n.to_owned(),
                    clock: Some(c),
                    channels: Some(ch),
                },
                None => Format {
                    pt: pt.to_owned(),
                    name: String::new(),
                    clock: None,
                    channels: None,
                },
            },
        };
        out.push(f);
    }
    Some((head.join(" "), out))
}

/// Filters every RTP m= section of `sdp`; `offer` says whether this SDP is an offer (`mask`
/// applies to offers only). Returns warnings for the daemon to log; never fails.
pub fn apply(sdp: &mut Sdp, opts: &CodecOptions, offer: bool) -> Vec<String> {
    let mut warnings = Vec::new();
    if !opts.accept.is_empty() || !opts.transcode.is_empty() {
        warnings.push(format!(
            "codec accept/transcode ({}) need transcoding, which this relay does not do: ignored",
            opts.accept
                .iter()
                .chain(&opts.transcode)
                .cloned()
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    let mut remove_specs: Vec<String> = opts.strip.clone();
    if offer {
        remove_specs.extend(opts.mask.iter().cloned());
    }
    let keep_specs: Vec<String> = opts.except.iter().chain(&opts.offer).cloned().collect();
    if remove_specs.is_empty() && opts.offer.is_empty() {
        return warnings;
    }
    for (idx, section) in sdp.media.iter_mut().enumerate() {
        let Some((head, fmts)) = formats(section) else {
            continue;
        };
        let kept: Vec<&Format> = fmts
            .iter()
            .filter(|f| !any_match(f, &remove_specs) || any_match(f, &keep_specs))
            .collect();
        if kept.is_empty() {
            warnings.push(format!(
                "m= line {}: stripping would leave no codec; left unchanged",
                idx + 1
            ));
            continue;
        }
        // `offer` codecs first, in the order given; the others keep theirs.
        let mut ordered: Vec<&Format> = Vec::new();
        for spec in &opts.offer {
            for f in kept.iter().filter(|f| f.matches(spec)) {
                if !ordered.iter().any(|o| o.pt == f.pt) {
                    ordered.push(f);
                }
            }
        }
        for f in &kept {
            if !ordered.iter().any(|o| o.pt == f.pt) {
                ordered.push(f);
            }
        }
        if ordered.len() == fmts.len() && ordered.iter().zip(&fmts).all(|(a, b)| a.pt == b.pt) {
            continue;
        }
        let removed: Vec<&str> = fmts
            .iter()
            .filter(|f| !ordered.iter().any(|o| o.pt == f.pt))
            .map(|f| f.pt.as_str())
            .collect();
        let pts: Vec<&str> = ordered.iter().map(|f| f.pt.as_str()).collect();
        section[0].text = format!("m={head} {}", pts.join(" "));
        section.retain(|l| pt_attr(l).is_none_or(|pt| !removed.contains(&pt)));
    }
    warnings
}

/// [`apply`] on SDP text; unparsable text is returned unchanged (the session code reports it).
pub fn apply_text(sdp: &str, opts: &CodecOptions, offer: bool) -> (String, Vec<String>) {
    if opts.is_empty() {
        return (sdp.to_owned(), Vec::new());
    }
    match Sdp::parse(sdp) {
        Ok(mut s) => {
            let w = apply(&mut s, opts, offer);
            (s.to_string(), w)
        }
        Err(_) => (sdp.to_owned(), Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
m=audio 4000 RTP/AVP 8 0 9 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\na=ptime:20\r\nm=video 4002 RTP/AVPF 96 97\r\na=rtpmap:96 VP8/90000\r\n\
a=rtcp-fb:96 nack\r\na=rtpmap:97 H264/90000\r\na=fmtp:97 profile-level-id=42e01f\r\na=rtcp-fb:* ccm fir\r\n";

    fn run(o: CodecOptions, offer: bool) -> (String, Vec<String>) {
        apply_text(OFFER, &o, offer)
    }

    fn list(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn strip_removes_payload_types_and_their_attributes() {
        let (out, w) = run(
            CodecOptions {
                strip: list(&["pcma", "telephone-event", "H264"]),
                ..Default::default()
            },
            true,
        );
        assert!(w.is_empty());
        assert!(out.contains("m=audio 4000 RTP/AVP 0 9\r\n"), "{out}");
        assert!(!out.contains("rtpmap:8") && !out.contains(":101"));
        assert!(out.contains("m=video 4002 RTP/AVPF 96\r\n"));
        assert!(!out.contains("97") && out.contains("a=rtcp-fb:* ccm fir\r\n"));
        assert!(out.contains("a=ptime:20\r\n") && out.contains("a=rtcp-fb:96 nack\r\n"));
    }

    #[test]
    fn static_types_numbers_and_parameters_match() {
        let o = |s: &[&str]| {
            run(
                CodecOptions {
                    strip: list(s),
                    ..Default::default()
                },
                false,
            )
            .0
        };
        assert!(o(&["PCMU"]).contains("RTP/AVP 8 9 101\r\n"));
        assert!(o(&["9"]).contains("RTP/AVP 8 0 101\r\n"));
        assert!(o(&["PCMA/8000"]).contains("RTP/AVP 0 9 101\r\n"));
        assert!(o(&["PCMA/16000"]).contains("RTP/AVP 8 0 9 101\r\n"));
        assert!(o(&["PCMA/8000/2"]).contains("RTP/AVP 8 0 9 101\r\n"));
    }

    #[test]
    fn strip_all_except_and_offer_order() {
        let (out, _) = run(
            CodecOptions {
                strip: list(&["all"]),
                except: list(&["PCMU", "VP8"]),
                ..Default::default()
            },
            true,
        );
        assert!(
            out.contains("m=audio 4000 RTP/AVP 0\r\n")
                && out.contains("m=video 4002 RTP/AVPF 96\r\n")
        );
        let (out, _) = run(
            CodecOptions {
                offer: list(&["G722", "PCMU"]),
                ..Default::default()
            },
            true,
        );
        assert!(out.contains("m=audio 4000 RTP/AVP 9 0 8 101\r\n"), "{out}");
    }

    #[test]
    fn mask_is_for_offers_and_stripping_everything_is_refused() {
        let mask = CodecOptions {
            mask: list(&["PCMA"]),
            ..Default::default()
        };
        assert!(run(mask.clone(), true).0.contains("RTP/AVP 0 9 101\r\n"));
        assert_eq!(run(mask, false).0, OFFER);
        let (out, w) = run(
            CodecOptions {
                strip: list(&["all"]),
                ..Default::default()
            },
            true,
        );
        assert_eq!(out, OFFER);
        assert_eq!(w.len(), 2);
    }

    #[test]
    fn transcoding_options_only_warn() {
        let (out, w) = run(
            CodecOptions {
                accept: list(&["opus"]),
                transcode: list(&["G729"]),
                ..Default::default()
            },
            true,
        );
        assert_eq!(out, OFFER);
        assert_eq!(w.len(), 1);
    }
}
