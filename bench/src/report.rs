//! The results: a markdown table with the targets as ratios, and a PNG plot.

use std::{fmt::Write as _, path::Path};

use anyhow::{Context as _, Result};
use plotters::{
    prelude::*,
    style::{FontStyle, register_font},
};

use crate::traffic::{Search, Spread};

/// The floor, XDP and TC side by side, same run: (median, min, max) each.
pub struct Hooks {
    pub floor_ns: Spread,
    pub xdp_ns: Spread,
    pub tc_ns: Spread,
    /// Zero-loss pps over the searches.
    pub floor_rate: Spread,
    pub xdp_rate: Spread,
    pub tc_rate: Spread,
    pub tc_unthrottled: crate::traffic::Trial,
    pub tc_insns: Option<u32>,
}

pub struct Results {
    pub generator: String,
    pub date: String,
    pub machine: String,
    pub kernel: String,
    pub verifier_insns: Option<u32>,
    pub hooks: Hooks,
    pub floor_ns: f64,
    /// (installed streams, ns/packet)
    pub relay_ns: Vec<(u32, f64)>,
    pub floor_rate: Search,
    /// (distinct streams offered, search)
    pub relay_rate: Vec<(u32, Search)>,
    pub rtpengine_rate: Option<Search>,
    /// RTP -> SRTP (SDES) through our daemon's userspace crypto path, and through rtpengine.
    pub srtp_ours: Option<Search>,
    pub srtp_rtpengine: Option<Search>,
    /// Offer+answer pairs per second over NG, one client then [`NG_CLIENTS`]: ours,
    /// rtpengine's.
    pub ng_ours: Option<(f64, f64)>,
    pub ng_rtpengine: Option<(f64, f64)>,
    pub notes: Vec<String>,
}

/// Concurrent NG clients for the NG rate: a Kamailio's rtpengine module sends from each of
/// its workers, each waiting for its reply.
pub const NG_CLIENTS: u32 = 16;

fn mpps(pps: f64) -> String {
    format!("{:.3}", pps / 1e6)
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

impl Results {
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "## Benchmark, {}\n", self.date);
        let _ = writeln!(s, "Machine: {}; kernel {}.", self.machine, self.kernel);
        let _ = writeln!(
            s,
            "Generator: {} on CPU 0; relay ingress NAPI thread on CPU 1; sink: an XDP program \
             counting and dropping. Zero loss = highest offered rate with loss <= 0.01% (median \
             of five 200 ms trials per step; median of three searches; one search of three-trial \
             steps with --quick).\n",
            self.generator
        );
        let _ = writeln!(s, "| measure | floor | relay | rtpengine |");
        let _ = writeln!(s, "|---|---:|---:|---:|");
        let relay1 = self.relay_ns.first().map_or(f64::NAN, |x| x.1);
        let _ = writeln!(
            s,
            "| ns/packet, BPF_PROG_TEST_RUN repeat, 1 stream | {:.1} | {:.1} | - |",
            self.floor_ns, relay1
        );
        for (n, ns) in self.relay_ns.iter().skip(1) {
            let _ = writeln!(s, "| ns/packet, {n} streams installed | | {ns:.1} | |");
        }
        let rte = self.rtpengine_rate.as_ref();
        for (i, (n, r)) in self.relay_rate.iter().enumerate() {
            let floor = if i == 0 {
                mpps(self.floor_rate.zero_loss_pps)
            } else {
                String::new()
            };
            let peer = match (i, rte) {
                (0, Some(p)) => mpps(p.zero_loss_pps),
                (0, None) => "not run".into(),
                _ => String::new(),
            };
            let _ = writeln!(
                s,
                "| zero-loss Mpps, {n} distinct stream{} | {floor} | {}{} | {peer} |",
                if i == 0 { "" } else { "s (relay only)" },
                mpps(r.zero_loss_pps),
                if r.generator_bound {
                    " (generator-bound)"
                } else {
                    ""
                },
            );
        }
        let _ = writeln!(
            s,
            "| unthrottled Mpps (loss) | {} ({:.2}%) | {} ({:.2}%) | {} |",
            mpps(self.floor_rate.unthrottled.rate()),
            self.floor_rate.unthrottled.loss() * 100.0,
            self.relay_rate
                .first()
                .map_or("-".into(), |r| mpps(r.1.unthrottled.rate())),
            self.relay_rate
                .first()
                .map_or(f64::NAN, |r| r.1.unthrottled.loss() * 100.0),
            rte.map_or("-".into(), |p| format!(
                "{} ({:.2}%)",
                mpps(p.unthrottled.rate()),
                p.unthrottled.loss() * 100.0
            )),
        );
        let _ = writeln!(
            s,
            "| forwarded Mpps at that overload | {} | {} | {} |",
            mpps(self.floor_rate.unthrottled.forwarded()),
            self.relay_rate
                .first()
                .map_or("-".into(), |r| mpps(r.1.unthrottled.forwarded())),
            rte.map_or("-".into(), |p| mpps(p.unthrottled.forwarded())),
        );
        let fmt_srtp = |v: Option<&Search>| v.map_or("not run".into(), |v| mpps(v.zero_loss_pps));
        let _ = writeln!(
            s,
            "| zero-loss Mpps, RTP -> SRTP (SDES, AES_CM_128_HMAC_SHA1_80), 1 stream, userspace | - | {} | {} |",
            fmt_srtp(self.srtp_ours.as_ref()),
            fmt_srtp(self.srtp_rtpengine.as_ref())
        );
        let fmt_over = |v: Option<&Search>| {
            v.map_or("not run".into(), |v| {
                format!(
                    "{} of {} ({:.2}% loss)",
                    mpps(v.unthrottled.forwarded()),
                    mpps(v.unthrottled.rate()),
                    v.unthrottled.loss() * 100.0
                )
            })
        };
        let _ = writeln!(
            s,
            "| RTP -> SRTP forwarded Mpps, unthrottled generator | - | {} | {} |",
            fmt_over(self.srtp_ours.as_ref()),
            fmt_over(self.srtp_rtpengine.as_ref())
        );
        let fmt_ng = |v: Option<f64>| v.map_or("not run".into(), |v| format!("{v:.0}"));
        let _ = writeln!(
            s,
            "| NG offer+answer pairs/s, one client (a request's latency) | - | {} | {} |",
            fmt_ng(self.ng_ours.map(|v| v.0)),
            fmt_ng(self.ng_rtpengine.map(|v| v.0))
        );
        let _ = writeln!(
            s,
            "| NG offer+answer pairs/s, {NG_CLIENTS} clients (Kamailio workers) | - | {} | {} |",
            fmt_ng(self.ng_ours.map(|v| v.1)),
            fmt_ng(self.ng_rtpengine.map(|v| v.1))
        );
        let _ = writeln!(s, "\n| target (same run) | figure | |");
        let _ = writeln!(s, "|---|---:|---|");
        let r_ns = relay1 / self.floor_ns;
        let _ = writeln!(
            s,
            "| relay ns/packet <= 1.5x floor | {r_ns:.2}x | {} |",
            verdict(r_ns <= 1.5)
        );
        if let Some((_, r)) = self.relay_rate.first() {
            let x = r.zero_loss_pps / self.floor_rate.zero_loss_pps;
            let _ = writeln!(
                s,
                "| zero-loss rate >= 0.8x floor | {x:.2}x | {} |",
                verdict(x >= 0.8)
            );
            match rte {
                Some(p) if p.zero_loss_pps > 0.0 => {
                    let x = r.zero_loss_pps / p.zero_loss_pps;
                    let _ = writeln!(
                        s,
                        "| zero-loss rate >= 20x rtpengine | {x:.1}x | {} |",
                        verdict(x >= 20.0)
                    );
                }
                Some(_) => {
                    let _ = writeln!(
                        s,
                        "| zero-loss rate >= 20x rtpengine | rtpengine lost packets down to 10 kpps: > {:.0}x | met |",
                        r.zero_loss_pps / 10_000.0
                    );
                }
                None => {
                    let _ = writeln!(s, "| zero-loss rate >= 20x rtpengine | not run | - |");
                }
            }
        }
        if let (Some(first), Some(last)) = (self.relay_ns.first(), self.relay_ns.last()) {
            let x = last.1 / first.1;
            let _ = writeln!(
                s,
                "| ns/packet at {} streams <= 1.2x at 1 | {x:.2}x | {} |",
                last.0,
                verdict(x <= 1.2)
            );
        }
        let h = &self.hooks;
        let _ = writeln!(
            s,
            "\n### XDP and TC hooks, same run\n\nThe same relay program on its two hooks (TC is what \
             `--datapath auto` runs on veth and other virtual devices), next to the floor. Median \
             (min-max): ns/packet over five BPF_PROG_TEST_RUN repeat runs; zero-loss Mpps over the \
             searches (1 stream). For TC the relay's veth runs a pass-through XDP program so that \
             it delivers what the generator's XDP_TX sends (a veth schedules NAPI only then).\n"
        );
        let _ = writeln!(s, "| measure | floor (XDP) | relay XDP | relay TC |");
        let _ = writeln!(s, "|---|---:|---:|---:|");
        let ns = |x: &Spread| format!("{:.1} ({:.1}-{:.1})", x.median, x.min, x.max);
        let pps = |x: &Spread| format!("{} ({}-{})", mpps(x.median), mpps(x.min), mpps(x.max));
        let _ = writeln!(
            s,
            "| ns/packet, 1 stream | {} | {} | {} |",
            ns(&h.floor_ns),
            ns(&h.xdp_ns),
            ns(&h.tc_ns)
        );
        let _ = writeln!(
            s,
            "| zero-loss Mpps, 1 stream | {} | {} | {} |",
            pps(&h.floor_rate),
            pps(&h.xdp_rate),
            pps(&h.tc_rate)
        );
        let _ = writeln!(
            s,
            "| TC unthrottled Mpps (loss) | | | {} ({:.2}%) |",
            mpps(h.tc_unthrottled.rate()),
            h.tc_unthrottled.loss() * 100.0
        );
        if let Some(n) = self.verifier_insns {
            let _ = writeln!(
                s,
                "\nVerifier: {n} instructions processed for the relay program (XDP), {} for TC.",
                h.tc_insns.map_or("?".into(), |n| n.to_string())
            );
        }
        for n in &self.notes {
            let _ = writeln!(s, "\n{n}");
        }
        s
    }

    pub fn plot(&self, path: &Path) -> Result<()> {
        let font = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
        let bytes = std::fs::read(font).with_context(|| {
            format!("{font} (Debian fonts-dejavu-core; cargo xtask bench installs it)")
        })?;
        register_font(
            "sans-serif",
            FontStyle::Normal,
            Box::leak(bytes.into_boxed_slice()),
        )
        .map_err(|_| anyhow::anyhow!("{font} is not a usable font"))?;
        let root = BitMapBackend::new(path, (1200, 500)).into_drawing_area();
        root.fill(&WHITE)?;
        let (left, right) = root.split_horizontally(600);

        let mut bars: Vec<(String, f64)> =
            vec![("floor".into(), self.floor_rate.zero_loss_pps / 1e6)];
        for (n, r) in &self.relay_rate {
            bars.push((format!("relay {n}"), r.zero_loss_pps / 1e6));
        }
        if let Some(p) = &self.rtpengine_rate {
            bars.push(("rtpengine".into(), p.zero_loss_pps / 1e6));
        }
        let top = bars.iter().map(|b| b.1).fold(0.1, f64::max) * 1.15;
        let mut c = ChartBuilder::on(&left)
            .caption("zero-loss forwarding rate (Mpps)", ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d((0..bars.len() as i32 - 1).into_segmented(), 0.0..top)?;
        let names: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
        c.configure_mesh()
            .disable_x_mesh()
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => names.get(*i as usize).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .draw()?;
        c.draw_series(
            Histogram::vertical(&c)
                .style(BLUE.mix(0.6).filled())
                .margin(20)
                .data(bars.iter().enumerate().map(|(i, b)| (i as i32, b.1))),
        )?;

        let max_ns = self
            .relay_ns
            .iter()
            .map(|x| x.1)
            .fold(self.floor_ns, f64::max)
            * 1.3;
        let xs = |n: u32| f64::from(n).log10();
        let x_max = self.relay_ns.last().map_or(6.0, |x| xs(x.0)).max(1.0);
        let mut c = ChartBuilder::on(&right)
            .caption("ns/packet vs installed streams", ("sans-serif", 20))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..x_max + 0.2, 0.0..max_ns)?;
        c.configure_mesh()
            .x_desc("streams (log10)")
            .y_desc("ns/packet")
            .x_label_formatter(&|v| format!("1e{v:.0}"))
            .draw()?;
        c.draw_series(LineSeries::new(
            self.relay_ns.iter().map(|(n, ns)| (xs(*n), *ns)),
            &RED,
        ))?
        .label("relay")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
        c.draw_series(
            self.relay_ns
                .iter()
                .map(|(n, ns)| Circle::new((xs(*n), *ns), 4, RED.filled())),
        )?;
        c.draw_series(LineSeries::new(
            [(0.0, self.floor_ns), (x_max + 0.2, self.floor_ns)],
            &BLUE,
        ))?
        .label("floor")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
        c.configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    }
}
