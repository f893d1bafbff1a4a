//! A per-day bar chart as plain SVG shapes, drawn by the template: no script and no inline style
//! (the page's CSP allows neither), colours come from the stylesheet.

use crate::accounts::api_keys::DayUsage;

/// One day's bar: requests to scale, errors as the bar's lower part, and a tooltip.
pub struct Bar {
    pub x: u32,
    pub y: u32,
    pub h: u32,
    pub err_y: u32,
    pub err_h: u32,
    pub title: String,
}

pub struct Chart {
    pub width: u32,
    pub height: u32,
    pub bars: Vec<Bar>,
    /// The chart in words, for screen readers and as its caption.
    pub summary: String,
}

const BAR: u32 = 4;
const GAP: u32 = 1;
const HEIGHT: u32 = 32;

/// Bars for `days` (oldest first), scaled to the busiest day; a day with any use gets at least
/// one pixel, so a single request is visible.
pub fn daily(days: &[DayUsage]) -> Chart {
    let peak = days.iter().map(|d| d.requests).max().unwrap_or(0).max(1);
    let scale = |n: i64| -> u32 {
        if n <= 0 {
            0
        } else {
            ((n as f64 / peak as f64 * f64::from(HEIGHT)).round() as u32).clamp(1, HEIGHT)
        }
    };
    let bars = days
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let (h, err_h) = (scale(d.requests), scale(d.errors));
            Bar {
                x: i as u32 * (BAR + GAP),
                y: HEIGHT - h,
                h,
                err_y: HEIGHT - err_h,
                err_h,
                title: format!("{}: {} requests, {} errors", d.day, d.requests, d.errors),
            }
        })
        .collect();
    let total: i64 = days.iter().map(|d| d.requests).sum();
    let errors: i64 = days.iter().map(|d| d.errors).sum();
    let summary = match days.iter().max_by_key(|d| d.requests) {
        Some(busiest) if total > 0 => format!(
            "{total} requests ({errors} errors) in {} days; busiest {} with {}",
            days.len(),
            busiest.day,
            busiest.requests
        ),
        _ if days.len() == 1 => "No requests today".into(),
        _ => format!("No requests in {} days", days.len()),
    };
    Chart {
        width: days.len() as u32 * (BAR + GAP),
        height: HEIGHT,
        bars,
        summary,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(day: &str, requests: i64, errors: i64) -> DayUsage {
        DayUsage {
            day: day.into(),
            requests,
            errors,
        }
    }

    #[test]
    fn bars_scale_to_the_busiest_day_and_one_request_shows() {
        let c = daily(&[
            day("2026-11-28", 0, 0),
            day("2026-11-29", 1, 0),
            day("2026-11-30", 1000, 500),
        ]);
        assert_eq!(c.width, 15);
        assert_eq!(c.bars[0].h, 0);
        assert_eq!(c.bars[1].h, 1, "a single request is at least a pixel");
        assert_eq!((c.bars[2].h, c.bars[2].y), (HEIGHT, 0));
        assert_eq!(c.bars[2].err_h, HEIGHT / 2);
        assert_eq!(c.bars[2].x, 10);
        assert!(
            c.summary
                .starts_with("1001 requests (500 errors) in 3 days; busiest 2026-11-30")
        );
        assert_eq!(
            daily(&[day("2026-11-30", 0, 0)]).summary,
            "No requests today"
        );
    }
}
