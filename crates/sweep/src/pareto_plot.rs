//! The sweep's Pareto plot: every configuration as a grey dot, the front joined in red and
//! numbered in its order (the numbers key the table beside the plot on `sweep.html`). Drawn
//! with the run report's plotting helpers ([`mallard_report::html::plots`]), so both pages'
//! plots share size, font and colours.

use mallard_report::html::plots::{range, svg, FONT, PALETTE};
use plotters::prelude::*;

macro_rules! t {
    ($e:expr) => {
        $e.map_err(|e| e.to_string())?
    };
}

/// A scatter plot of sweep points with the Pareto front highlighted, joined, and numbered
/// 1, 2, ... in the order of `front` (the numbers key a table beside the plot).
pub fn pareto_svg(
    title: &str,
    x_desc: &str,
    y_desc: &str,
    x_fmt: &dyn Fn(f64) -> String,
    y_fmt: &dyn Fn(f64) -> String,
    points: &[(f64, f64)],
    front: &[usize],
) -> String {
    svg(|root| {
        let finite: Vec<(f64, f64)> = points
            .iter()
            .copied()
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .collect();
        let (x0, x1) = range(finite.iter().map(|p| p.0), false);
        let (y0, y1) = range(finite.iter().map(|p| p.1), true);
        let mut chart = t!(ChartBuilder::on(root)
            .caption(title, (FONT, 18))
            .margin(12)
            .margin_right(28)
            .x_label_area_size(44)
            .y_label_area_size(72)
            .build_cartesian_2d(x0..x1, y0..y1));
        t!(chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .x_label_formatter(&|v| x_fmt(*v))
            .y_label_formatter(&|v| y_fmt(*v))
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 14))
            .light_line_style(RGBColor(240, 240, 240))
            .draw());
        let grey = RGBColor(150, 150, 150);
        t!(chart
            .draw_series(
                finite
                    .iter()
                    .map(|&p| Circle::new(p, 4, grey.mix(0.6).filled()))
            )
            .map(
                |s| s.label("configuration").legend(move |(x, y)| Circle::new(
                    (x + 10, y),
                    4,
                    grey.filled()
                ))
            ));
        let red = PALETTE[3];
        let fp: Vec<(f64, f64)> = front.iter().map(|&i| points[i]).collect();
        t!(chart
            .draw_series(LineSeries::new(fp.clone(), red.stroke_width(2)))
            .map(|s| s
                .label("Pareto front")
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], red))));
        t!(chart.draw_series(fp.iter().map(|&p| Circle::new(p, 5, red.filled()))));
        // Coincident points share one label: "3-7".
        let mut labels: Vec<((f64, f64), String)> = Vec::new();
        let mut k = 0;
        while k < fp.len() {
            let mut end = k;
            while end + 1 < fp.len() && fp[end + 1] == fp[k] {
                end += 1;
            }
            let text = if end == k {
                format!("{}", k + 1)
            } else {
                format!("{}-{}", k + 1, end + 1)
            };
            labels.push((fp[k], text));
            k = end + 1;
        }
        t!(chart.draw_series(
            labels
                .into_iter()
                .map(|(p, text)| { EmptyElement::at(p) + Text::new(text, (7, -18), (FONT, 14)) })
        ));
        t!(chart
            .configure_series_labels()
            .label_font((FONT, 14))
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(200, 200, 200))
            .draw());
        Ok(())
    })
}
