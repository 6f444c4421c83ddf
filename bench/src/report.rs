//! The results: a markdown table with the targets as ratios, and a PNG plot.

use std::{fmt::Write as _, path::Path};

use anyhow::{Context as _, Result};
use plotters::{
    prelude::*,
    style::{FontStyle, register_font},
};

use crate::traffic::{Latency, Search, Spread};

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

/// One forwarding program (or peer) of the run: median (min-max) of each figure.
pub struct Program {
    pub name: String,
    /// BPF_PROG_TEST_RUN repeat, 1 stream (None: not an eBPF program).
    pub ns: Option<Spread>,
    /// Forwarded pps while the unthrottled generator overloads it.
    pub saturation: Spread,
    pub zero_loss: Spread,
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
    /// Parse floor, lookup floor, relay XDP and TC, kernel path, rtpengine: same run.
    pub programs: Vec<Program>,
    /// The relay (XDP) with its next hop left to the FIB lookup (slot unresolved).
    pub xdp_fib_ns: Spread,
    /// One-way latency per program at 10%, 50% and 90% of its saturation rate.
    pub latencies: Vec<(String, Vec<Latency>)>,
    pub floor_rate: Search,
    /// (distinct streams offered, search)
    pub relay_rate: Vec<(u32, Search)>,
    pub rtpengine_rate: Option<Search>,
    /// SRTP -> RTP (SDES) through our daemon's userspace crypto path, and through rtpengine.
    pub srtp_ours: Option<crate::srtp::SrtpFigures>,
    pub srtp_rtpengine: Option<crate::srtp::SrtpFigures>,
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

fn spread_ns(x: &Spread) -> String {
    format!("{:.1} ({:.1}-{:.1})", x.median, x.min, x.max)
}

fn spread_pps(x: &Spread) -> String {
    format!("{} ({}-{})", mpps(x.median), mpps(x.min), mpps(x.max))
}

impl Results {
    fn program(&self, prefix: &str) -> Option<&Program> {
        self.programs.iter().find(|p| p.name.starts_with(prefix))
    }

    /// Issue 18's table: every program's saturation (headline), zero-loss rate and ns/packet,
    /// median (min-max), and the target ratios.
    fn capacity(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "\n### Capacity per program, same run\n\nSaturation = packets per second reaching \
             the sink while the unthrottled generator overloads the program (the headline \
             capacity); zero loss = highest offered rate with loss <= 0.01%. Median (min-max) \
             over the searches; ns/packet over five BPF_PROG_TEST_RUN repeat runs, 1 stream. The \
             relay's streams carry a next hop resolved by the control plane (array slot); \
             `relay, FIB next hop` is the same stream with the slot unresolved.\n"
        );
        let _ = writeln!(
            s,
            "| program | saturation Mpps | zero-loss Mpps | ns/packet |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|");
        for p in &self.programs {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                p.name,
                spread_pps(&p.saturation),
                spread_pps(&p.zero_loss),
                p.ns.as_ref().map_or("-".into(), spread_ns)
            );
        }
        let _ = writeln!(
            s,
            "| relay, FIB next hop (XDP) | | | {} |",
            spread_ns(&self.xdp_fib_ns)
        );
        let _ = writeln!(s, "\n| target (same run, medians) | figure | |");
        let _ = writeln!(s, "|---|---:|---|");
        let (parse, lookup, relay, kernel, rte) = (
            self.program("parse floor"),
            self.program("lookup floor"),
            self.program("relay (XDP)"),
            self.program("kernel path"),
            self.program("rtpengine"),
        );
        if let (Some(r), Some(l)) = (relay, lookup)
            && let (Some(rn), Some(ln)) = (&r.ns, &l.ns)
        {
            let x = rn.median / ln.median;
            let _ = writeln!(
                s,
                "| relay ns/packet <= 1.5x lookup floor | {x:.2}x ({:.1} vs {:.1}) | {} |",
                rn.median,
                ln.median,
                verdict(x <= 1.5)
            );
        }
        if let (Some(r), Some(p)) = (relay, parse) {
            let x = r.saturation.median / p.saturation.median;
            let _ = writeln!(
                s,
                "| relay saturation >= 0.9x parse floor | {x:.2}x | {} |",
                verdict(x >= 0.9)
            );
        }
        if let (Some(r), Some(k)) = (relay, kernel) {
            let x = r.zero_loss.median / k.zero_loss.median;
            let _ = writeln!(
                s,
                "| relay zero-loss >= 3x kernel path | {x:.2}x | {} |",
                verdict(x >= 3.0)
            );
        }
        match (relay, rte) {
            (Some(r), Some(p)) if p.zero_loss.median > 0.0 => {
                let x = r.zero_loss.median / p.zero_loss.median;
                let _ = writeln!(
                    s,
                    "| relay zero-loss >= 20x rtpengine userspace | {x:.1}x | {} |",
                    verdict(x >= 20.0)
                );
            }
            (Some(r), Some(_)) => {
                let _ = writeln!(
                    s,
                    "| relay zero-loss >= 20x rtpengine userspace | rtpengine lost packets down to 10 kpps: > {:.0}x | met |",
                    r.zero_loss.median / 10_000.0
                );
            }
            _ => {
                let _ = writeln!(
                    s,
                    "| relay zero-loss >= 20x rtpengine userspace | not run | - |"
                );
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
        if let Some(r) = relay
            && let Some(rn) = &r.ns
        {
            let _ = writeln!(
                s,
                "| (info) relay ns/packet, control-plane vs FIB next hop | {:.1} vs {:.1} | |",
                rn.median, self.xdp_fib_ns.median
            );
        }
        s.push_str(&self.latency_table());
        s
    }

    fn latency(&self, prefix: &str) -> Option<&[Latency]> {
        self.latencies
            .iter()
            .find(|(n, _)| n.starts_with(prefix))
            .map(|(_, l)| l.as_slice())
    }

    /// One-way latency per program and load, and its targets.
    fn latency_table(&self) -> String {
        let mut s = String::new();
        if self.latencies.is_empty() {
            return s;
        }
        let _ = writeln!(
            s,
            "\n### One-way latency, same run\n\nThe generator stamps each packet with \
             bpf_ktime_get_ns (CLOCK_MONOTONIC) as it sends; the sink's XDP program subtracts it \
             from its own reading of the same clock. One paced trial per load (after a short \
             warm-up), at 10%, 50% and 90% of the program's median saturation rate; histogram \
             buckets 250 ns wide up to 0.5 ms (upper edges shown). The generator paces no \
             lower than a few thousand packets per second: below that (rtpengine's loads) the \
             offered column shows what was really sent. At 10% load an idle vCPU's wake-up \
             shows in the tail.\n"
        );
        let _ = writeln!(
            s,
            "| program | load | offered Mpps | p50 us | p99 us | p99.9 us | samples |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|");
        for (name, ls) in &self.latencies {
            for l in ls {
                let _ = writeln!(
                    s,
                    "| {name} | {:.0}% | {} | {:.2} | {:.2} | {:.2} | {} |",
                    l.load * 100.0,
                    mpps(l.pps),
                    l.p50,
                    l.p99,
                    l.p999,
                    l.samples
                );
            }
        }
        let _ = writeln!(s, "\n| latency target | figure | |");
        let _ = writeln!(s, "|---|---:|---|");
        let at = |ls: &[Latency], load: f64| {
            ls.iter()
                .find(|l| (l.load - load).abs() < 1e-6)
                .map(|l| l.p99)
        };
        if let (Some(r), Some(f)) = (self.latency("relay (XDP)"), self.latency("parse floor"))
            && let (Some(rp), Some(fp)) = (at(r, 0.5), at(f, 0.5))
        {
            let x = rp / fp;
            let _ = writeln!(
                s,
                "| relay p99 <= 2x floor's at 50% load | {x:.2}x ({rp:.2} vs {fp:.2} us) | {} |",
                verdict(x <= 2.0)
            );
        }
        for peer in ["kernel path", "rtpengine"] {
            if let (Some(r), Some(p)) = (self.latency("relay (XDP)"), self.latency(peer)) {
                let pairs: Vec<(f64, f64)> = [0.1, 0.5, 0.9]
                    .iter()
                    .filter_map(|&ld| Some((at(r, ld)?, at(p, ld)?)))
                    .collect();
                let ok = !pairs.is_empty() && pairs.iter().all(|(a, b)| a < b);
                let fig = pairs
                    .iter()
                    .map(|(a, b)| format!("{a:.1} vs {b:.1}"))
                    .collect::<Vec<_>>()
                    .join("; ");
                let _ = writeln!(
                    s,
                    "| relay p99 below {peer}'s at every load (10/50/90%) | {fig} | {} |",
                    verdict(ok)
                );
            }
        }
        s
    }

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
        s.push_str(&self.capacity());
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
        s.push_str(&crate::srtp::section(
            self.srtp_ours.as_ref(),
            self.srtp_rtpengine.as_ref(),
        ));
        for n in &self.notes {
            let _ = writeln!(s, "\n{n}");
        }
        s
    }

    /// p99 latency per program against the load (fraction of its saturation), log scale.
    fn plot_latency(
        &self,
        area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    ) -> Result<()> {
        let top = self
            .latencies
            .iter()
            .flat_map(|(_, ls)| ls.iter().map(|l| l.p99))
            .filter(|v| v.is_finite())
            .fold(1.0, f64::max)
            * 2.0;
        let mut c = ChartBuilder::on(area)
            .caption("p99 one-way latency (us) vs load", ("sans-serif", 18))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..100.0, (0.1..top).log_scale())?;
        c.configure_mesh()
            .x_desc("% of the program's saturation rate")
            .y_desc("p99 us")
            .draw()?;
        let colors = [BLUE, CYAN, RED, MAGENTA, GREEN, BLACK];
        for (i, (name, ls)) in self.latencies.iter().enumerate() {
            let color = colors[i % colors.len()];
            let pts: Vec<(f64, f64)> = ls
                .iter()
                .filter(|l| l.p99.is_finite() && l.p99 > 0.0)
                .map(|l| (l.load * 100.0, l.p99))
                .collect();
            c.draw_series(LineSeries::new(pts.clone(), color))?
                .label(axis_label(name))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            c.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))?;
        }
        c.configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        Ok(())
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
        let root = BitMapBackend::new(path, (1500, 1000)).into_drawing_area();
        root.fill(&WHITE)?;
        let parts = root.split_evenly((2, 2));
        let (left, middle, lat_area, right) = (&parts[0], &parts[1], &parts[2], &parts[3]);
        self.plot_latency(lat_area)?;

        // Saturation and zero-loss per program, median bars with min-max whiskers.
        let names: Vec<String> = self.programs.iter().map(|p| axis_label(&p.name)).collect();
        let n = self.programs.len().max(1) as f64;
        let top = self
            .programs
            .iter()
            .map(|p| p.saturation.max.max(p.zero_loss.max) / 1e6)
            .fold(0.1, f64::max)
            * 1.15;
        let mut c = ChartBuilder::on(left)
            .caption(
                "saturation (blue) and zero-loss (green), Mpps",
                ("sans-serif", 18),
            )
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(-0.5..n - 0.5, 0.0..top)?;
        let label = |v: &f64| {
            let i = v.round();
            if (v - i).abs() < 0.01 && i >= 0.0 {
                names.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        };
        c.configure_mesh()
            .disable_x_mesh()
            .x_labels(self.programs.len() * 2 + 1)
            .x_label_formatter(&label)
            .draw()?;
        for (i, p) in self.programs.iter().enumerate() {
            let x = i as f64;
            for (dx, sp, color) in [(-0.2, &p.saturation, BLUE), (0.2, &p.zero_loss, GREEN)] {
                c.draw_series([Rectangle::new(
                    [(x + dx - 0.17, 0.0), (x + dx + 0.17, sp.median / 1e6)],
                    color.mix(0.6).filled(),
                )])?;
                c.draw_series([ErrorBar::new_vertical(
                    x + dx,
                    sp.min / 1e6,
                    sp.median / 1e6,
                    sp.max / 1e6,
                    BLACK.filled(),
                    8,
                )])?;
            }
        }

        // ns/packet per eBPF program.
        let with_ns: Vec<(String, Spread)> = self
            .programs
            .iter()
            .filter_map(|p| p.ns.map(|ns| (p.name.clone(), ns)))
            .chain([("relay FIB".to_owned(), self.xdp_fib_ns)])
            .collect();
        let top = with_ns.iter().map(|x| x.1.max).fold(10.0, f64::max) * 1.15;
        let mut c = ChartBuilder::on(middle)
            .caption("ns/packet, 1 stream", ("sans-serif", 18))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(-0.5..with_ns.len() as f64 - 0.5, 0.0..top)?;
        let ns_names: Vec<String> = with_ns.iter().map(|x| axis_label(&x.0)).collect();
        let label = |v: &f64| {
            let i = v.round();
            if (v - i).abs() < 0.01 && i >= 0.0 {
                ns_names.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        };
        c.configure_mesh()
            .disable_x_mesh()
            .x_labels(with_ns.len() * 2 + 1)
            .x_label_formatter(&label)
            .draw()?;
        for (i, (_, sp)) in with_ns.iter().enumerate() {
            let x = i as f64;
            c.draw_series([Rectangle::new(
                [(x - 0.3, 0.0), (x + 0.3, sp.median)],
                RED.mix(0.5).filled(),
            )])?;
            c.draw_series([ErrorBar::new_vertical(
                x,
                sp.min,
                sp.median,
                sp.max,
                BLACK.filled(),
                8,
            )])?;
        }

        let max_ns = self
            .relay_ns
            .iter()
            .map(|x| x.1)
            .fold(self.floor_ns, f64::max)
            * 1.3;
        let xs = |n: u32| f64::from(n).log10();
        let x_max = self.relay_ns.last().map_or(6.0, |x| xs(x.0)).max(1.0);
        let mut c = ChartBuilder::on(right)
            .caption("relay ns/packet vs installed streams", ("sans-serif", 18))
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

/// The axis label of a program.
fn axis_label(name: &str) -> String {
    match name {
        "parse floor (XDP)" => "parse floor".into(),
        "lookup floor (XDP)" => "lookup floor".into(),
        "relay (XDP)" => "relay XDP".into(),
        "relay (TC)" => "relay TC".into(),
        "kernel path (nftables)" => "kernel nft".into(),
        "rtpengine (userspace)" => "rtpengine".into(),
        other => other.into(),
    }
}
