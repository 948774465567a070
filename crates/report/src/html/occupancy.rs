//! The arena occupancy plots: a heat map of arenas over the replay (one row per arena
//! descriptor, one column per sample, the colour the fraction of the arena's bytes in live
//! blocks) and the bytes in mapped arenas beside the bytes in live small objects.

use super::chart::{frame, labelled_line, legend, mesh, ops_by_mib};
use super::plots::{svg, FONT};
use crate::format::ops_label;
use crate::model::ArenaOccupancy;
use plotters::prelude::*;

macro_rules! t {
    ($e:expr) => {
        $e.map_err(|e| e.to_string())?
    };
}

const MIB: f64 = 1024.0 * 1024.0;

/// White (empty) to dark blue (full), through light blue: a nearly empty arena stays visible
/// against the page, a full one stands out.
fn fill_colour(f: f64) -> RGBColor {
    let f = f.clamp(0.0, 1.0);
    let lerp = |a: u8, b: u8, t: f64| (a as f64 + (b as f64 - a as f64) * t).round() as u8;
    let (from, to, t) = if f < 0.5 {
        ((255, 245, 200), (107, 174, 214), f / 0.5)
    } else {
        ((107, 174, 214), (8, 48, 107), (f - 0.5) / 0.5)
    };
    RGBColor(
        lerp(from.0, to.0, t),
        lerp(from.1, to.1, t),
        lerp(from.2, to.2, t),
    )
}

/// The heat map of `o` for allocator `name`.
pub fn heatmap_svg(o: &ArenaOccupancy, name: &str) -> String {
    let rows = o
        .samples
        .iter()
        .flat_map(|s| s.arenas.iter().map(|a| a.index + 1))
        .max()
        .unwrap_or(1) as f64;
    let end = o.samples.last().map_or(1, |s| s.ops_done.max(1)) as f64;
    svg(|root| {
        let (plot, legend) = root.split_horizontally(540);
        let mut chart = t!(ChartBuilder::on(&plot)
            .caption(format!("Arenas over the replay: {name}"), (FONT, 18))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..end, 0f64..rows));
        // No mesh lines: the light lines' style does nothing here.
        mesh(
            chart
                .configure_mesh()
                .disable_mesh()
                .x_desc("operations done")
                .y_desc("arena (descriptor index)")
                .y_labels((rows as usize).min(10) + 1)
                .x_label_formatter(&|v| ops_label(*v))
                .y_label_formatter(&|v| {
                    if (v - v.round()).abs() < 1e-6 {
                        format!("{v:.0}")
                    } else {
                        String::new()
                    }
                }),
        )?;
        let mut prev = 0f64;
        for s in &o.samples {
            let x1 = s.ops_done as f64;
            let x0 = prev;
            prev = x1;
            t!(chart.draw_series(s.arenas.iter().map(|a| {
                let f = a.block_bytes as f64 / o.arena_size.max(1) as f64;
                let y = a.index as f64;
                Rectangle::new([(x0, y), (x1, y + 1.0)], fill_colour(f).filled())
            })));
        }
        // The colour scale.
        let mut scale = t!(ChartBuilder::on(&legend)
            .margin_top(60)
            .margin_bottom(56)
            .margin_right(30)
            .y_label_area_size(52)
            .build_cartesian_2d(0f64..1f64, 0f64..100f64));
        t!(scale
            .configure_mesh()
            .disable_mesh()
            .disable_x_axis()
            .y_desc("% of arena in live blocks")
            .y_label_formatter(&|v| format!("{v:.0}"))
            .label_style((FONT, 12))
            .axis_desc_style((FONT, 12))
            .draw());
        t!(scale.draw_series((0..100).map(|k| {
            let k = k as f64;
            Rectangle::new([(0.0, k), (1.0, k + 1.0)], fill_colour(k / 100.0).filled())
        })));
        Ok(())
    })
}

/// Bytes in mapped arenas and bytes in live small objects over the replay.
pub fn bytes_svg(o: &ArenaOccupancy, name: &str) -> String {
    let mapped: Vec<(f64, f64)> = o
        .samples
        .iter()
        .map(|s| {
            let n = s.arenas.len() as u64 + u64::from(s.unlisted_arenas);
            (s.ops_done as f64, (n * o.arena_size) as f64 / MIB)
        })
        .collect();
    let live: Vec<(f64, f64)> = o
        .samples
        .iter()
        .map(|s| {
            let b: u64 = s.arenas.iter().map(|a| a.block_bytes).sum();
            (s.ops_done as f64, b as f64 / MIB)
        })
        .collect();
    let end = mapped.last().map_or(1.0, |p| p.0.max(1.0));
    let ymax = mapped.iter().map(|p| p.1).fold(0.1f64, f64::max);
    svg(|root| {
        let caption = format!("Mapped arenas and what they hold: {name}");
        let mut chart = frame(root, caption, 0f64..end, 0f64..ymax * 1.1)?;
        ops_by_mib(&mut chart, "MiB")?;
        let blue = RGBColor(8, 48, 107).stroke_width(2);
        let orange = RGBColor(255, 127, 14).stroke_width(2);
        labelled_line(&mut chart, mapped.clone(), blue, "bytes in mapped arenas")?;
        let live = live.clone();
        labelled_line(
            &mut chart,
            live,
            orange,
            "bytes in live small objects (blocks)",
        )?;
        legend(&mut chart, SeriesLabelPosition::UpperLeft)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_colour_scale_runs_from_pale_to_dark() {
        let (e, h, f) = (fill_colour(0.0), fill_colour(0.5), fill_colour(1.0));
        let lum = |c: RGBColor| c.0 as u32 + c.1 as u32 + c.2 as u32;
        assert!(lum(e) > lum(h) && lum(h) > lum(f));
        assert_eq!(fill_colour(2.0), f);
    }
}
