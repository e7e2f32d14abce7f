//! The run report: one self-contained HTML5 page made from the JSON of
//! `GET /apiv0.1/runs/<uuid>` ([`render`]), for a person reading a run in a browser.
//!
//! In order: the run (uuid, host, tags, start and end, state); its verdict as a wide banner
//! (PASSED, FAILED, NO VERDICT, NO CHECKS) and the table of checks; each endpoint's figures
//! beside the baseline's and the change; a chart of users and requests per second over the run,
//! drawn as inline SVG from the progress the gateway received.
//!
//! The page never holds a script, nor anything fetched from elsewhere (no font, image, style
//! sheet or link): the style is inline, the fonts the reader's own, and a Content-Security-Policy
//! `<meta>` forbids the rest, so a page saved to disk stays inert. Every string of the JSON
//! (endpoint names, tags, hosts come from clients) goes through [`escape`]. Sans-I/O: no clock,
//! no file; the work is linear in the rows, checks and points, each capped here as well.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde_json::Value;

/// The banner's colours: passed, failed, and no verdict (or no checks).
const GREEN: &str = "#1a7f37";
const RED: &str = "#cf222e";
const GREY: &str = "#6e7781";
/// The chart's lines: users (left axis) and requests per second (right axis).
const USERS_COLOUR: &str = "#0969da";
const RPS_COLOUR: &str = "#bc4c00";

/// Rows, checks, points and tags rendered at most; the JSON is bounded before it gets here, so
/// these only keep a page from growing with a mistake upstream.
const MAX_ROWS: usize = 1000;
const MAX_CHECKS: usize = 1000;
const MAX_POINTS: usize = 500;
const MAX_TAGS: usize = 100;

/// The chart's size in SVG units (CSS pixels at the page's full width) and its margins.
const CHART_W: f64 = 960.0;
const CHART_H: f64 = 260.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 64.0;
const TOP: f64 = 36.0;
const BOTTOM: f64 = 44.0;

/// How a figure is written.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Unit {
    /// A count: whole numbers as such.
    Count,
    /// A ratio 0..1, written as a percentage.
    Ratio,
    /// A time in ms, one decimal.
    Ms,
    /// Requests per second, one decimal.
    PerSecond,
}

/// Which way a figure improves, for the colour of its change.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Better {
    Lower,
    Higher,
    /// More requests is neither better nor worse: it follows the run's length.
    Neither,
}

/// The endpoints table's columns: the figure's key in the JSON, its heading, unit, direction.
const COLUMNS: [(&str, &str, Unit, Better); 9] = [
    ("requests", "requests", Unit::Count, Better::Neither),
    ("failures", "failures", Unit::Count, Better::Lower),
    ("fail_ratio", "fail ratio", Unit::Ratio, Better::Lower),
    ("avg", "avg ms", Unit::Ms, Better::Lower),
    ("p50", "p50 ms", Unit::Ms, Better::Lower),
    ("p95", "p95 ms", Unit::Ms, Better::Lower),
    ("p99", "p99 ms", Unit::Ms, Better::Lower),
    ("max", "max ms", Unit::Ms, Better::Lower),
    ("rps", "rps", Unit::PerSecond, Better::Higher),
];

/// What the banner says.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Banner {
    Passed,
    Failed,
    /// No verdict yet (running, committing) or ever (expired).
    NoVerdict,
    /// A verdict with no check to make.
    NoChecks,
}

impl Banner {
    fn of(run: &Value) -> Banner {
        let verdict = &run["verdict"];
        if !verdict.is_object() {
            return Banner::NoVerdict;
        }
        if verdict["checks"].as_array().is_none_or(Vec::is_empty) {
            return Banner::NoChecks;
        }
        match verdict["passed"].as_bool() {
            Some(true) => Banner::Passed,
            Some(false) => Banner::Failed,
            None => Banner::NoVerdict,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Banner::Passed => "PASSED",
            Banner::Failed => "FAILED",
            Banner::NoVerdict => "NO VERDICT",
            Banner::NoChecks => "NO CHECKS",
        }
    }

    fn class(self) -> &'static str {
        match self {
            Banner::Passed => "passed",
            Banner::Failed => "failed",
            Banner::NoVerdict | Banner::NoChecks => "none",
        }
    }
}

/// The report page of one run: `run` is the JSON of `GET /apiv0.1/runs/<uuid>` (uuid, state,
/// host, tags, started_at, ended_at, progress, result, verdict, baseline); members missing or of
/// another type show as "—" or as absent sections, never as an error. Returns a whole HTML5
/// document (UTF-8) without script or external resource.
pub fn render(run: &Value) -> String {
    let banner = Banner::of(run);
    let uuid = text(&run["uuid"]);
    let mut out = String::with_capacity(32 * 1024);
    head(&mut out, &uuid, banner);
    out.push_str("<body><main>\n");
    run_header(&mut out, run, &uuid);
    verdict_section(&mut out, run, banner);
    endpoints_section(&mut out, run);
    chart_section(&mut out, run);
    out.push_str("</main></body></html>\n");
    out
}

/// `s` made safe as HTML text and as a quoted attribute value.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A JSON value as text (not yet escaped): a string as itself, null as nothing, anything else
/// as its compact JSON.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Seconds since the epoch of an RFC 3339 time.
fn seconds(v: &Value) -> Option<f64> {
    let s = v.as_str()?;
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    Some(t.unix_timestamp_nanos() as f64 / 1e9)
}

fn head(out: &mut String, uuid: &str, banner: Banner) {
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"color-scheme\" content=\"light\">\n\
         <link rel=\"icon\" href=\"data:,\">\n\
         <title>{} · run {}</title>\n<style>{}</style></head>\n",
        banner.label(),
        escape(uuid),
        style()
    );
}

fn style() -> String {
    format!(
        "body{{margin:0;background:#fff;color:#1f2328;font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,'Helvetica Neue',Arial,'Noto Sans','Liberation Sans',sans-serif}}\
         main{{max-width:1000px;margin:0 auto;padding:12px 20px 32px;box-sizing:border-box}}\
         h1{{font-size:18px;margin:0 0 2px;word-break:break-all}}\
         h2{{font-size:16px;margin:22px 0 6px}}\
         code{{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,'Liberation Mono',monospace;font-size:13px}}\
         .meta{{color:#59636e;margin:0}}\
         .tag{{display:inline-block;border:1px solid #d1d9e0;border-radius:10px;padding:0 8px;margin:2px 4px 0 0;background:#f6f8fa;word-break:break-all}}\
         .banner{{margin:12px 0 6px;padding:14px 22px;border-radius:6px;color:#fff;font-size:28px;font-weight:700;letter-spacing:.04em}}\
         .banner span{{display:block;font-size:14px;font-weight:400;letter-spacing:0}}\
         .passed{{background:{GREEN}}}.failed{{background:{RED}}}.none{{background:{GREY}}}\
         table{{border-collapse:collapse;width:100%}}\
         th,td{{border-bottom:1px solid #d1d9e0;padding:3px 6px;text-align:right;vertical-align:top}}\
         th{{background:#f6f8fa;font-weight:600;white-space:nowrap}}\
         th:first-child,td:first-child,.checks td,.checks th{{text-align:left}}\
         td.name{{overflow-wrap:anywhere;min-width:12em}}\
         tr.fail td{{background:#ffebe9}}\
         tr.total td{{font-weight:600}}\
         .pass{{color:{GREEN};font-weight:600}}.fail-text{{color:{RED};font-weight:700}}.skip{{color:#59636e}}\
         .fig span{{display:block;white-space:nowrap}}\
         .base,.src{{color:#59636e;font-size:12px;font-weight:400}}td.name .base{{display:block}}\
         .chg{{font-size:12px;font-weight:400}}\
         .worse{{color:{RED}}}.better{{color:{GREEN}}}.same{{color:#59636e}}\
         .method{{font-size:11px;border:1px solid #d1d9e0;border-radius:4px;padding:0 4px;margin-right:4px}}\
         .note{{color:#59636e;margin:4px 0}}\
         svg{{display:block;width:100%;height:auto}}\
         svg text{{font-size:12px;fill:#59636e}}\
         .grid{{stroke:#d1d9e0;stroke-width:1}}\
         .axis{{stroke:#818b98;stroke-width:1}}"
    )
}

fn run_header(out: &mut String, run: &Value, uuid: &str) {
    let _ = writeln!(out, "<header><h1>Run <code>{}</code></h1>", escape(uuid));
    let started = text(&run["started_at"]);
    let ended = match &run["ended_at"] {
        Value::Null => "—".to_string(),
        v => text(v),
    };
    let length = match (seconds(&run["started_at"]), seconds(&run["ended_at"])) {
        (Some(a), Some(b)) if b >= a => format!(" ({})", duration_text(b - a)),
        _ => String::new(),
    };
    let _ = writeln!(
        out,
        "<p class=\"meta\">host <b>{}</b> · state <b>{}</b> · started {} · ended {}{}</p>",
        escape(&text(&run["host"])),
        escape(&text(&run["state"])),
        escape(&started),
        escape(&ended),
        length
    );
    if let Some(tags) = run["tags"].as_object()
        && !tags.is_empty()
    {
        out.push_str("<p class=\"meta\">");
        for (k, v) in tags.iter().take(MAX_TAGS) {
            let _ = write!(
                out,
                "<span class=\"tag\">{}={}</span>",
                escape(k),
                escape(&text(v))
            );
        }
        if tags.len() > MAX_TAGS {
            let _ = write!(out, " and {} more", tags.len() - MAX_TAGS);
        }
        out.push_str("</p>\n");
    }
    out.push_str("</header>\n");
}

/// `secs` as "1 h 02 min 05 s", "3 min 20 s" or "45 s".
fn duration_text(secs: f64) -> String {
    let total = secs.round() as u64;
    let (h, m, s) = (total / 3600, total / 60 % 60, total % 60);
    if h > 0 {
        format!("{h} h {m:02} min {s:02} s")
    } else if m > 0 {
        format!("{m} min {s:02} s")
    } else {
        format!("{s} s")
    }
}

fn verdict_section(out: &mut String, run: &Value, banner: Banner) {
    let verdict = &run["verdict"];
    let checks: &[Value] = verdict["checks"].as_array().map_or(&[], Vec::as_slice);
    let failed = checks
        .iter()
        .filter(|c| c["passed"].as_bool() == Some(false))
        .count();
    let skipped = checks.iter().filter(|c| c["passed"].is_null()).count();
    let detail = match banner {
        Banner::Passed => format!(
            "{} of {} checks passed{}",
            checks.len() - skipped,
            checks.len(),
            if skipped > 0 {
                format!(", {skipped} skipped")
            } else {
                String::new()
            }
        ),
        Banner::Failed => format!("{failed} of {} checks failed", checks.len()),
        Banner::NoChecks => {
            "no check applies to this run (thresholds at register, or [verdict] rules)".to_string()
        }
        Banner::NoVerdict => match run["state"].as_str() {
            Some("running") => "the run is running: its verdict comes with its commit".to_string(),
            Some("committing") => "the run is being committed".to_string(),
            Some("expired") => "the run expired without a commit: it has no verdict".to_string(),
            _ => "the run has no verdict".to_string(),
        },
    };
    let _ = writeln!(
        out,
        "<section id=\"verdict\"><div class=\"banner {}\">{}<span>{}</span></div>",
        banner.class(),
        banner.label(),
        escape(&detail)
    );
    if verdict.is_object() {
        let baseline = match (&verdict["baseline"], &run["baseline"]["started_at"]) {
            (Value::Null, _) => "No baseline: no earlier run to compare with.".to_string(),
            (b, Value::Null) => format!("Baseline: run <code>{}</code>.", escape(&text(b))),
            (b, at) => format!(
                "Baseline: run <code>{}</code>, started {}.",
                escape(&text(b)),
                escape(&text(at))
            ),
        };
        let _ = writeln!(out, "<p class=\"note\">{baseline}</p>");
    }
    if !checks.is_empty() {
        checks_table(out, checks);
    }
    out.push_str("</section>\n");
}

fn checks_table(out: &mut String, checks: &[Value]) {
    out.push_str(
        "<table class=\"checks\"><thead><tr><th>Endpoint</th><th>Check</th><th>Value</th>\
         <th>Limit</th><th>Result</th></tr></thead><tbody>\n",
    );
    for c in checks.iter().take(MAX_CHECKS) {
        let check = text(&c["check"]);
        let unit = metric_unit(c["metric"].as_str().unwrap_or_default());
        let (class, result) = match c["passed"].as_bool() {
            Some(true) => ("", "<span class=\"pass\">passed</span>".to_string()),
            Some(false) => (
                " class=\"fail\"",
                "<span class=\"fail-text\">FAILED</span>".to_string(),
            ),
            None => ("", "<span class=\"skip\">skipped</span>".to_string()),
        };
        let reason = match &c["reason"] {
            Value::Null => String::new(),
            r => format!(" <span class=\"skip\">— {}</span>", escape(&text(r))),
        };
        let source = match c["source"].as_str() {
            Some(s) => format!(" <span class=\"src\">({})</span>", escape(s)),
            None => String::new(),
        };
        let _ = writeln!(
            out,
            "<tr{class}><td class=\"name\">{}</td><td><code>{}</code>{source}</td><td>{}</td><td>{}</td><td>{result}{reason}</td></tr>",
            endpoint_cell(&text(&c["endpoint"]), &text(&c["method"])),
            escape(&check),
            with_unit(c["value"].as_f64(), unit),
            with_unit(c["limit"].as_f64(), unit),
        );
    }
    if checks.len() > MAX_CHECKS {
        let _ = writeln!(
            out,
            "<tr><td colspan=\"5\">and {} more checks</td></tr>",
            checks.len() - MAX_CHECKS
        );
    }
    out.push_str("</tbody></table>\n");
}

/// The unit of a check's value and limit: its metric's (the outcome's `metric`).
fn metric_unit(metric: &str) -> Unit {
    match metric {
        "fail_ratio" => Unit::Ratio,
        "rps" => Unit::PerSecond,
        "requests" | "failures" => Unit::Count,
        _ => Unit::Ms,
    }
}

/// An endpoint's name, after its method when it has one, escaped.
fn endpoint_cell(name: &str, method: &str) -> String {
    if method.is_empty() {
        escape(name)
    } else {
        format!(
            "<span class=\"method\">{}</span>{}",
            escape(method),
            escape(name)
        )
    }
}

/// A figure as the tables write it ("—" when missing): counts whole, ratios in %, times and
/// rates to one decimal.
fn figure_text(v: Option<f64>, unit: Unit) -> String {
    let Some(v) = v.filter(|v| v.is_finite()) else {
        return "—".to_string();
    };
    match unit {
        Unit::Count if v.fract() == 0.0 => format!("{v:.0}"),
        Unit::Ratio => format!("{:.2}%", v * 100.0),
        Unit::Count | Unit::Ms | Unit::PerSecond => format!("{v:.1}"),
    }
}

/// A check's value or limit with its unit ("612.0 ms", "1.00%", "12.5/s").
fn with_unit(v: Option<f64>, unit: Unit) -> String {
    let s = figure_text(v, unit);
    match (v.is_some(), unit) {
        (true, Unit::Ms) => format!("{s} ms"),
        (true, Unit::PerSecond) => format!("{s}/s"),
        _ => s,
    }
}

/// The change from `base` to `v` in % of `base`; none when `base` is 0 and `v` is not.
fn change(v: f64, base: f64) -> Option<f64> {
    if base == 0.0 {
        return (v == 0.0).then_some(0.0);
    }
    let pct = (v - base) / base.abs() * 100.0;
    pct.is_finite().then_some(pct)
}

/// A change as "+12.3%" with its class: worse, better, or same (under 0.05% either way, or a
/// figure with no better direction).
fn change_text(pct: f64, better: Better) -> (String, &'static str) {
    let text = if pct.abs() < 0.05 {
        "±0.0%".to_string()
    } else if pct > 0.0 {
        format!("+{pct:.1}%")
    } else {
        format!("−{:.1}%", -pct)
    };
    let class = match better {
        _ if pct.abs() < 0.05 => "same",
        Better::Neither => "same",
        Better::Lower if pct > 0.0 => "worse",
        Better::Higher if pct < 0.0 => "worse",
        Better::Lower | Better::Higher => "better",
    };
    (text, class)
}

/// A row's figure; p50 falls back on the median when the row carries only that.
fn figure(row: &Value, key: &str) -> Option<f64> {
    let figures = &row["figures"];
    figures[key].as_f64().or_else(|| match key {
        "p50" => figures["median"].as_f64(),
        _ => None,
    })
}

fn endpoints_section(out: &mut String, run: &Value) {
    out.push_str("<section id=\"endpoints\"><h2>Endpoints</h2>\n");
    let Some(rows) = run["result"]["rows"].as_array() else {
        out.push_str(
            "<p class=\"note\">No result yet: the figures come with the commit.</p></section>\n",
        );
        return;
    };
    let baseline_rows = run["baseline"]["rows"].as_array();
    let baseline: HashMap<(String, String), &Value> = baseline_rows
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .take(MAX_ROWS)
        .map(|r| ((text(&r["name"]), text(&r["method"])), r))
        .collect();
    if baseline_rows.is_some() {
        out.push_str("<p class=\"note\">Each figure above the baseline's, then the change.</p>\n");
    }
    out.push_str("<table class=\"figures\"><thead><tr><th>Endpoint</th>");
    for (_, heading, _, _) in COLUMNS {
        let _ = write!(out, "<th>{heading}</th>");
    }
    out.push_str("</tr></thead><tbody>\n");
    for row in rows.iter().take(MAX_ROWS) {
        let (name, method) = (text(&row["name"]), text(&row["method"]));
        let total = name == "Aggregated" && method.is_empty();
        let base = baseline.get(&(name.clone(), method.clone()));
        // A row the baseline lacks shows its figures alone, said once in its name's cell.
        let missing = if baseline_rows.is_some() && base.is_none() {
            "<span class=\"base\">not in the baseline</span>"
        } else {
            ""
        };
        let _ = write!(
            out,
            "<tr{}><td class=\"name\">{}{missing}</td>",
            if total { " class=\"total\"" } else { "" },
            endpoint_cell(&name, &method)
        );
        for (key, _, unit, better) in COLUMNS {
            let v = figure(row, key);
            let _ = write!(
                out,
                "<td class=\"fig\"><span>{}</span>",
                figure_text(v, unit)
            );
            if let Some(base) = base {
                let b = figure(base, key);
                let _ = write!(out, "<span class=\"base\">{}</span>", figure_text(b, unit));
                let (chg, class) = match v.zip(b).and_then(|(v, b)| change(v, b)) {
                    Some(pct) => change_text(pct, better),
                    None => ("—".to_string(), "same"),
                };
                let _ = write!(out, "<span class=\"chg {class}\">{chg}</span>");
            }
            out.push_str("</td>");
        }
        out.push_str("</tr>\n");
    }
    if rows.len() > MAX_ROWS {
        let _ = writeln!(
            out,
            "<tr><td colspan=\"10\">and {} more endpoints</td></tr>",
            rows.len() - MAX_ROWS
        );
    }
    out.push_str("</tbody></table></section>\n");
}

/// One series of the chart: (seconds since the start, value) in the order received.
type Series = Vec<(f64, f64)>;

fn chart_section(out: &mut String, run: &Value) {
    out.push_str("<section id=\"chart\"><h2>Users and requests per second</h2>\n");
    let progress: &[Value] = run["progress"].as_array().map_or(&[], Vec::as_slice);
    let times: Vec<Option<f64>> = progress
        .iter()
        .take(MAX_POINTS)
        .map(|p| seconds(&p["time"]))
        .collect();
    let Some(first) = times.iter().flatten().copied().reduce(f64::min) else {
        out.push_str("<p class=\"note\">No progress received.</p></section>\n");
        return;
    };
    let t0 = seconds(&run["started_at"]).unwrap_or(first);
    let mut users = Series::new();
    let mut rps = Series::new();
    for (p, t) in progress.iter().zip(&times) {
        let Some(t) = t else { continue };
        let at = t - t0;
        if let Some(u) = p["users"].as_f64() {
            users.push((at, u));
        }
        if let Some(r) = p["rps"].as_f64() {
            rps.push((at, r));
        }
    }
    if users.is_empty() && rps.is_empty() {
        out.push_str(
            "<p class=\"note\">The progress received carries no users nor rps.</p></section>\n",
        );
        return;
    }
    out.push_str(&chart_svg(&users, &rps));
    out.push_str("</section>\n");
}

/// The step of an axis: the first of `mantissas` × a power of ten that reaches `raw`.
fn nice_step(raw: f64, mantissas: &[f64]) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let scale = 10f64.powf(raw.log10().floor());
    mantissas
        .iter()
        .map(|m| m * scale)
        .find(|step| *step >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * scale)
}

/// An axis label: whole numbers as such, others to at most two decimals.
fn tick_text(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// The chart: users on the left axis, rps on the right, both from 0 over four equal steps (so
/// they share the grid), seconds since the start along the bottom.
fn chart_svg(users: &Series, rps: &Series) -> String {
    const STEPS: f64 = 4.0;
    const Y_MANTISSAS: [f64; 10] = [1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0];
    let (pw, ph) = (CHART_W - LEFT - RIGHT, CHART_H - TOP - BOTTOM);
    let all_t = users.iter().chain(rps).map(|p| p.0);
    let x_min = all_t.clone().fold(0.0, f64::min);
    let x_max = all_t.fold(f64::MIN, f64::max).max(x_min + 1.0);
    let top_of = |s: &Series| {
        STEPS
            * nice_step(
                s.iter().map(|p| p.1).fold(0.0, f64::max) / STEPS,
                &Y_MANTISSAS,
            )
    };
    let (users_top, rps_top) = (top_of(users), top_of(rps));
    let x = |t: f64| LEFT + (t - x_min) / (x_max - x_min) * pw;
    let y = |v: f64, top: f64| (TOP + ph - v / top * ph).clamp(TOP, TOP + ph);

    let mut svg = String::with_capacity(16 * 1024);
    let _ = writeln!(
        svg,
        "<svg viewBox=\"0 0 {CHART_W} {CHART_H}\" role=\"img\" aria-label=\"users and requests per second over the run\">"
    );
    // The grid and both axes' labels, one line per step.
    for i in 0..=STEPS as u32 {
        let f = f64::from(i) / STEPS;
        let gy = TOP + ph - f * ph;
        let _ = writeln!(
            svg,
            "<line class=\"grid\" x1=\"{LEFT}\" y1=\"{gy:.1}\" x2=\"{:.1}\" y2=\"{gy:.1}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" style=\"fill:{USERS_COLOUR}\">{}</text>\
             <text x=\"{:.1}\" y=\"{:.1}\" style=\"fill:{RPS_COLOUR}\">{}</text>",
            LEFT + pw,
            LEFT - 6.0,
            gy + 4.0,
            tick_text(f * users_top),
            LEFT + pw + 6.0,
            gy + 4.0,
            tick_text(f * rps_top),
        );
    }
    let x_step = nice_step((x_max - x_min) / 8.0, &[1.0, 2.0, 5.0, 10.0]);
    let mut tick = (x_min / x_step).ceil() * x_step;
    let mut ticks = 0;
    while tick <= x_max + x_step * 1e-9 && ticks < 50 {
        let tx = x(tick);
        let _ = writeln!(
            svg,
            "<line class=\"axis\" x1=\"{tx:.1}\" y1=\"{:.1}\" x2=\"{tx:.1}\" y2=\"{:.1}\"/>\
             <text x=\"{tx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            TOP + ph,
            TOP + ph + 4.0,
            TOP + ph + 17.0,
            tick_text(tick)
        );
        tick += x_step;
        ticks += 1;
    }
    let _ = writeln!(
        svg,
        "<line class=\"axis\" x1=\"{LEFT}\" y1=\"{bottom:.1}\" x2=\"{:.1}\" y2=\"{bottom:.1}\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">seconds since the start</text>\
         <text x=\"{LEFT}\" y=\"{:.1}\" text-anchor=\"middle\" style=\"fill:{USERS_COLOUR}\">users</text>\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" style=\"fill:{RPS_COLOUR}\">rps</text>",
        LEFT + pw,
        LEFT + pw / 2.0,
        CHART_H - 6.0,
        TOP - 10.0,
        LEFT + pw,
        TOP - 10.0,
        bottom = TOP + ph,
    );
    // The legend, centred above the plot.
    let lx = LEFT + pw / 2.0 - 150.0;
    let _ = writeln!(
        svg,
        "<line x1=\"{lx:.1}\" y1=\"14\" x2=\"{:.1}\" y2=\"14\" style=\"stroke:{USERS_COLOUR};stroke-width:3\"/>\
         <text x=\"{:.1}\" y=\"18\">users (left axis)</text>\
         <line x1=\"{:.1}\" y1=\"14\" x2=\"{:.1}\" y2=\"14\" style=\"stroke:{RPS_COLOUR};stroke-width:3\"/>\
         <text x=\"{:.1}\" y=\"18\">requests per second (right axis)</text>",
        lx + 24.0,
        lx + 30.0,
        lx + 140.0,
        lx + 164.0,
        lx + 170.0
    );
    for (series, top, colour, name) in [
        (users, users_top, USERS_COLOUR, "users"),
        (rps, rps_top, RPS_COLOUR, "rps"),
    ] {
        if series.is_empty() {
            continue;
        }
        let mut points = String::with_capacity(series.len() * 14);
        for (t, v) in series {
            let _ = write!(points, "{:.1},{:.1} ", x(*t), y(*v, top));
        }
        let _ = writeln!(
            svg,
            "<polyline class=\"{name}\" points=\"{}\" style=\"fill:none;stroke:{colour};stroke-width:3;stroke-linejoin:round\"/>",
            points.trim_end()
        );
        // A single point draws no line: mark it.
        if let [(t, v)] = series.as_slice() {
            let _ = writeln!(
                svg,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" style=\"fill:{colour}\"/>",
                x(*t),
                y(*v, top)
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
#[path = "report_tests.rs"]
mod tests;
