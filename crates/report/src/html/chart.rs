//! The look every plot shares, written once: the frame of a chart (caption, margins, label
//! areas), its mesh's fonts and light lines, a labelled line series and the legend box. The run
//! report's plots ([`super::plots`], the occupancy plots) draw through these; they are public
//! so that another page's plot (the sweep's Pareto plot, `mallard_sweep::pareto_plot`) can
//! look the same by calling them too. Each is the same plotters calls the plots made before, so
//! an SVG drawn through them is byte for byte the one drawn without.

use super::plots::{Drawn, FONT};
use crate::format::{mib_tick, ops_label};
use plotters::chart::MeshStyle;
use plotters::coord::ranged1d::{AsRangedCoord, Ranged, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

/// A plot's drawing area ([`super::plots::svg`] hands one to its closure).
pub type Area<'b> = DrawingArea<SVGBackend<'b>, Shift>;

/// A chart over `x` by `y` on `root`: the caption in 18 px, 12 px margins (28 on the right,
/// room for the last x label), 44 px under the x axis and 72 px left of the y axis for labels.
#[allow(clippy::type_complexity)]
pub fn frame<'a, 'b, X: AsRangedCoord, Y: AsRangedCoord>(
    root: &'a Area<'b>,
    caption: impl AsRef<str>,
    x: X,
    y: Y,
) -> Result<
    ChartContext<'a, SVGBackend<'b>, Cartesian2d<X::CoordDescType, Y::CoordDescType>>,
    super::plots::DrawError,
> {
    ChartBuilder::on(root)
        .caption(caption, (FONT, 18))
        .margin(12)
        .margin_right(28)
        .x_label_area_size(44)
        .y_label_area_size(72)
        .build_cartesian_2d(x, y)
        .map_err(Into::into)
}

/// Draws a mesh the caller has set up (descriptions, label counts and formatters) in the common
/// look: labels in 13 px, axis descriptions in 14 px, light lines a pale grey.
pub fn mesh<X, Y>(m: &mut MeshStyle<'_, '_, X, Y, SVGBackend<'_>>) -> Drawn
where
    X: Ranged + ValueFormatter<<X as Ranged>::ValueType>,
    Y: Ranged + ValueFormatter<<Y as Ranged>::ValueType>,
{
    m.label_style((FONT, 13))
        .axis_desc_style((FONT, 14))
        .light_line_style(RGBColor(240, 240, 240))
        .draw()
        .map_err(Into::into)
}

/// The axes of a memory-over-the-replay plot (RSS, mapped arenas): operations done across, MiB
/// up (described as `y_desc`), drawn by [`mesh`].
pub fn ops_by_mib(
    chart: &mut ChartContext<'_, SVGBackend<'_>, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    y_desc: &str,
) -> Drawn {
    mesh(
        chart
            .configure_mesh()
            .x_desc("operations done")
            .y_desc(y_desc)
            .x_label_formatter(&|v| ops_label(*v))
            .y_label_formatter(&|v| mib_tick(*v)),
    )
}

/// A line through `points` in `style`, named `label` in the legend by a short stroke of the
/// same style.
pub fn labelled_line<CT: CoordTranslate<From = (f64, f64)>>(
    chart: &mut ChartContext<'_, SVGBackend<'_>, CT>,
    points: Vec<(f64, f64)>,
    style: ShapeStyle,
    label: &str,
) -> Drawn {
    chart
        .draw_series(LineSeries::new(points, style))
        .map_err(super::plots::DrawError::from)?
        .label(label)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
    Ok(())
}

/// The legend box at `at`: labels in 14 px on a nearly opaque white, a light grey border.
pub fn legend<'a, 'b: 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, SVGBackend<'b>, CT>,
    at: SeriesLabelPosition,
) -> Drawn {
    chart
        .configure_series_labels()
        .label_font((FONT, 14))
        .position(at)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(200, 200, 200))
        .draw()
        .map_err(Into::into)
}
