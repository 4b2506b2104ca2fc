//! Drawing the dashboard: a header, throughput and latency over time (fault windows
//! marked), the SLO table, the services grid, the queues, the event log. It draws the
//! run state as given and computes no figure of its own. At 80x24 the charts collapse
//! and the lists scroll; a large terminal gets taller charts and longer lists. Colour is
//! never the only signal: every status is also a word, and `NO_COLOR` turns colour off.

use faultline_agent::supervisor::ReplicaState;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Axis, Block, Borders, Cell, Chart, Clear, Dataset, GraphType, Paragraph, Row, Table, Wrap,
};

use super::app::{App, keys};
use crate::run::state::Stage;
use crate::slo::BudgetLeft;

fn color(app: &App, c: Color) -> Style {
    if app.no_color {
        Style::default()
    } else {
        Style::default().fg(c)
    }
}

fn state_word(s: ReplicaState) -> (&'static str, Color) {
    match s {
        ReplicaState::Healthy => ("UP", Color::Green),
        ReplicaState::Starting => ("STARTING", Color::Yellow),
        ReplicaState::Unhealthy => ("UNHEALTHY", Color::Red),
        ReplicaState::Paused => ("PAUSED", Color::Magenta),
        ReplicaState::Backoff => ("RESTARTING", Color::Yellow),
        ReplicaState::Held => ("DOWN", Color::Red),
        ReplicaState::Stopped => ("STOPPED", Color::DarkGray),
    }
}

/// The smallest terminal the dashboard draws in; below it, a notice says so.
pub const MIN_SIZE: (u16, u16) = (60, 20);

pub fn draw(f: &mut Frame, app: &App) {
    let area = f.area();
    if area.width < MIN_SIZE.0 || area.height < MIN_SIZE.1 {
        let notice = format!(
            "terminal too small: {}x{}; the dashboard needs at least {}x{} (q quits)",
            area.width, area.height, MIN_SIZE.0, MIN_SIZE.1
        );
        f.render_widget(Paragraph::new(notice).wrap(Wrap { trim: true }), area);
        return;
    }
    let small = area.height < 32 || area.width < 100;
    let slo_rows = app.state.slos.len().max(1) as u16 + 3;
    let [header, charts, slos, middle, events] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Length(if small { 5 } else { (area.height / 4).max(10) }),
        Constraint::Length(slo_rows.min(area.height / 4).max(3)),
        Constraint::Fill(1),
        Constraint::Length(if small { 5 } else { (area.height / 5).max(8) }),
    ])
    .areas(area);
    draw_header(f, app, header);
    draw_charts(f, app, charts, small);
    draw_slos(f, app, slos, small);
    // Queues only for a topology with `[messaging]`: without a broker there are none.
    if app.state.broker.is_some() {
        let [services, queues] = Layout::horizontal(if small {
            [Constraint::Percentage(55), Constraint::Percentage(45)]
        } else {
            [Constraint::Percentage(60), Constraint::Percentage(40)]
        })
        .areas(middle);
        draw_services(f, app, services, small);
        draw_queues(f, app, queues, small);
    } else {
        draw_services(f, app, middle, small);
    }
    draw_events(f, app, events);
    if app.help {
        draw_help(f, app, area);
    }
}

fn draw_header(f: &mut Frame, app: &App, area: Rect) {
    let s = &app.state;
    let stage = match (s.stage, s.passed) {
        (Stage::Starting, _) => ("STARTING", Color::Yellow),
        (Stage::Running, _) => ("RUNNING", Color::Cyan),
        (Stage::Checking, _) => ("CHECKING", Color::Yellow),
        (Stage::Done, Some(true)) => ("PASSED", Color::Green),
        (Stage::Done, _) => ("FAILED", Color::Red),
    };
    let achieved = s.seconds.last().map_or(0, |r| r.requests);
    let rate = match s.target_rate {
        Some(r) => format!("target {r:.0} it/s, achieved {achieved} req/s"),
        None => format!("{achieved} req/s"),
    };
    let title = Line::from(vec![
        Span::styled(
            "faultline ",
            color(app, Color::Cyan).add_modifier(Modifier::BOLD),
        ),
        Span::raw(format!("{}  ", s.experiment)),
        Span::styled(
            format!("[{}]", stage.0),
            color(app, stage.1).add_modifier(Modifier::BOLD),
        ),
        Span::raw(if s.duration_s > 0.0 {
            format!(
                "  {:.0}/{:.0} s  seed {}  {}",
                s.elapsed_s, s.duration_s, s.seed, s.target
            )
        } else {
            format!("  attached {:.0} s  agent {}", s.elapsed_s, s.target)
        }),
    ]);
    let second = Line::from(vec![
        Span::raw("phase: "),
        Span::styled(s.phase.clone(), color(app, Color::Yellow)),
        Span::raw(format!("   {rate}   ? keys  q quit")),
    ]);
    f.render_widget(Paragraph::new(vec![title, second]), area);
}

fn draw_charts(f: &mut Frame, app: &App, area: Rect, small: bool) {
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(area);
    let rows = &app.state.seconds;
    // The last minute (or what fits), seconds on the x axis.
    let span = if small { 60 } else { 120 };
    let from = rows.len().saturating_sub(span);
    let rows = &rows[from..];
    let x0 = from as f64;
    // A run that fits is drawn whole, its end at the right edge.
    let d = app.state.duration_s;
    let x1 = if d > 0.0 && d <= span as f64 {
        d
    } else {
        (from + span.max(rows.len())) as f64
    };
    let ok: Vec<(f64, f64)> = rows.iter().map(|r| (r.t as f64, r.ok as f64)).collect();
    let err: Vec<(f64, f64)> = rows.iter().map(|r| (r.t as f64, r.errors as f64)).collect();
    let p50: Vec<(f64, f64)> = rows.iter().map(|r| (r.t as f64, r.p50_ms)).collect();
    let p99: Vec<(f64, f64)> = rows.iter().map(|r| (r.t as f64, r.p99_ms)).collect();
    let max_rps = rows.iter().map(|r| r.requests).max().unwrap_or(1).max(1) as f64;
    let max_ms = rows.iter().map(|r| r.p99_ms).fold(1.0f64, f64::max);
    // Fault windows: a line along the top of the latency chart while a fault is active.
    let mut marks: Vec<(f64, f64)> = Vec::new();
    for w in &app.state.windows {
        let end = w.end_s.unwrap_or(app.state.elapsed_s);
        let mut t = w.start_s.max(x0);
        while t <= end {
            marks.push((t, max_ms * 1.05));
            t += 0.25;
        }
    }
    let throughput = Chart::new(vec![
        Dataset::default()
            .name("ok")
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(color(app, Color::Green))
            .data(&ok),
        Dataset::default()
            .name("errors")
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(color(app, Color::Red))
            .data(&err),
    ])
    .block(
        Block::default()
            .borders(Borders::ALL)
            .title("throughput (req/s: ok, errors)"),
    )
    .x_axis(Axis::default().bounds([x0, x1]))
    .y_axis(
        Axis::default()
            .bounds([0.0, max_rps * 1.1])
            .labels(vec![Span::raw("0"), Span::raw(format!("{max_rps:.0}"))]),
    );
    let latency = Chart::new(vec![
        Dataset::default()
            .name("p50")
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(color(app, Color::Cyan))
            .data(&p50),
        Dataset::default()
            .name("p99")
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(color(app, Color::Magenta))
            .data(&p99),
        Dataset::default()
            .name("fault")
            .marker(Marker::Block)
            .graph_type(GraphType::Scatter)
            .style(color(app, Color::Yellow))
            .data(&marks),
    ])
    .block(Block::default().borders(Borders::ALL).title(format!(
        "latency ms (p50, p99{})",
        if app.state.windows.is_empty() {
            ""
        } else {
            "; ▀ fault active"
        }
    )))
    .x_axis(Axis::default().bounds([x0, x1]))
    .y_axis(
        Axis::default()
            .bounds([0.0, max_ms * 1.1])
            .labels(vec![Span::raw("0"), Span::raw(format!("{max_ms:.0}"))]),
    );
    f.render_widget(throughput, left);
    f.render_widget(latency, right);
}

fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.2}%", v * 100.0))
}

fn draw_slos(f: &mut Frame, app: &App, area: Rect, small: bool) {
    let header = if small {
        Row::new(["SLO", "target", "SLI", "budget", "short", "burn", "status"])
    } else {
        Row::new([
            "SLO",
            "objective",
            "SLI",
            "budget left",
            "burn short",
            "burn long",
            "status",
        ])
    }
    .style(Style::default().add_modifier(Modifier::BOLD));
    let rows: Vec<Row> = app
        .state
        .slos
        .iter()
        .map(|s| {
            let (word, c) = if s.alerting {
                ("BURNING", Color::Red)
            } else if !s.met {
                ("BREACHED", Color::Red)
            } else if s.short_burn > 1.0 {
                ("AT RISK", Color::Yellow)
            } else {
                ("OK", Color::Green)
            };
            Row::new(vec![
                Cell::from(s.name.clone()),
                Cell::from(format!("{}%", s.objective * 100.0)),
                Cell::from(pct(s.sli)),
                Cell::from(BudgetLeft(s.budget_remaining).to_string()),
                Cell::from(format!("{:.1}x", s.short_burn)),
                Cell::from(format!("{:.1}x", s.long_burn)),
                Cell::from(word).style(color(app, c).add_modifier(Modifier::BOLD)),
            ])
        })
        .collect();
    let empty = rows.is_empty();
    let widths = if small {
        [
            Constraint::Fill(3),
            Constraint::Length(7),
            Constraint::Length(8),
            Constraint::Length(7),
            Constraint::Length(7),
            Constraint::Length(7),
            Constraint::Length(8),
        ]
    } else {
        [
            Constraint::Fill(3),
            Constraint::Length(10),
            Constraint::Length(9),
            Constraint::Length(12),
            Constraint::Length(11),
            Constraint::Length(10),
            Constraint::Length(9),
        ]
    };
    let table = Table::new(rows, widths).header(header).block(
        Block::default().borders(Borders::ALL).title(if empty {
            "SLOs (none in this run)"
        } else {
            "SLOs"
        }),
    );
    f.render_widget(table, area);
}

fn draw_services(f: &mut Frame, app: &App, area: Rect, small: bool) {
    let visible = area.height.saturating_sub(3) as usize;
    // Scroll so the selection stays in view.
    let first = app.selected.saturating_sub(visible.saturating_sub(1));
    let replicas = app.state.replicas.iter().enumerate().map(|(i, r)| {
        let (word, c) = state_word(r.state);
        let faults: Vec<String> = app.faults_on(r).iter().map(|f| f.kind.clone()).collect();
        let selected = i == app.selected;
        let name = format!("{}{}", if selected { "> " } else { "  " }, r.name);
        let cells = [
            Cell::from(name),
            Cell::from(r.zone.clone()),
            Cell::from(word).style(color(app, c).add_modifier(Modifier::BOLD)),
            Cell::from(r.restarts.to_string()),
        ];
        let row = service_row(app, cells, app.state.breakers.get(&r.name), &faults);
        if selected {
            row.style(Style::default().add_modifier(Modifier::REVERSED))
        } else {
            row
        }
    });
    // Proxies to what no replica is: listed after the replicas, never selected.
    let outside = app.state.outside.iter().map(|o| {
        let faults: Vec<String> = app
            .faults_on_outside(o)
            .iter()
            .map(|f| f.kind.clone())
            .collect();
        let (word, c) = if o.enabled {
            (o.kind, Color::Cyan)
        } else {
            ("off", Color::DarkGray)
        };
        let cells = [
            Cell::from(format!("  {}", o.name)),
            Cell::from("-"),
            Cell::from(word).style(color(app, c)),
            Cell::from("-"),
        ];
        service_row(app, cells, None, &faults)
    });
    let total = app.state.replicas.len() + app.state.outside.len();
    let rows: Vec<Row> = replicas.chain(outside).skip(first).take(visible).collect();
    // Where the list is cut, the title says how many rows are out of view.
    let hidden = total.saturating_sub(rows.len());
    let cut = if hidden > 0 {
        format!(", {hidden} more: ↑↓")
    } else {
        String::new()
    };
    let mut widths = vec![
        Constraint::Min(19),
        Constraint::Length(4),
        Constraint::Length(10),
        Constraint::Length(if small { 3 } else { 8 }),
    ];
    let mut header = vec![
        "replica",
        "zone",
        "state",
        if small { "rst" } else { "restarts" },
    ];
    if app.state.has_breakers {
        widths.push(Constraint::Fill(2));
        header.push("breakers");
    }
    widths.push(Constraint::Fill(1));
    header.push("faults");
    let proxies = match app.state.outside.len() {
        0 => String::new(),
        1 => ", 1 proxy".into(),
        n => format!(", {n} proxies"),
    };
    let table = Table::new(rows, widths)
        .header(Row::new(header).style(Style::default().add_modifier(Modifier::BOLD)))
        .block(Block::default().borders(Borders::ALL).title(format!(
            "services ({} replicas{proxies}, {} faults active{cut})",
            app.state.replicas.len(),
            app.state.faults.len()
        )));
    f.render_widget(table, area);
}

/// A row of the services panel: its first four cells, then the breakers (where the
/// system has any) and the faults on it.
fn service_row<'a>(
    app: &App,
    cells: [Cell<'a>; 4],
    breakers: Option<&Vec<String>>,
    faults: &[String],
) -> Row<'a> {
    let mut cells = cells.to_vec();
    // A breaker column only where some service's metrics expose breakers: "closed"
    // would claim what nobody measured.
    if app.state.has_breakers {
        let style = if breakers.is_some() {
            color(app, Color::Red)
        } else {
            Style::default()
        };
        let text = breakers.map_or_else(|| "closed".into(), |b| b.join(","));
        cells.push(Cell::from(text).style(style));
    }
    cells.push(Cell::from(faults.join(",")).style(color(app, Color::Yellow)));
    Row::new(cells)
}

fn draw_queues(f: &mut Frame, app: &App, area: Rect, small: bool) {
    let rows: Vec<Row> = app
        .state
        .queues
        .iter()
        .filter(|q| q.dlq.is_some())
        .map(|q| {
            let dlq = q.dlq_depth.unwrap_or(0);
            Row::new(vec![
                Cell::from(q.name.clone()),
                Cell::from(q.visible.to_string()),
                Cell::from(q.in_flight.to_string()),
                Cell::from(dlq.to_string()).style(if dlq > 0 {
                    color(app, Color::Red)
                } else {
                    Style::default()
                }),
                Cell::from(format!("{:.0}s", q.oldest_age_seconds)),
            ])
        })
        .collect();
    let n = if small { 4 } else { 7 };
    let table = Table::new(
        rows,
        [
            Constraint::Min(if small { 8 } else { 14 }),
            Constraint::Length(n),
            Constraint::Length(n),
            Constraint::Length(n.min(5)),
            Constraint::Length(n.max(5)),
        ],
    )
    .header(
        if small {
            Row::new(["queue", "vis", "fly", "DLQ", "age"])
        } else {
            Row::new(["queue", "visible", "flight", "DLQ", "oldest"])
        }
        .style(Style::default().add_modifier(Modifier::BOLD)),
    )
    .block(Block::default().borders(Borders::ALL).title("queues"));
    f.render_widget(table, area);
}

fn draw_events(f: &mut Frame, app: &App, area: Rect) {
    let mut all: Vec<(f64, String)> = app
        .state
        .events
        .iter()
        .map(|e| (e.t_s, e.message.clone()))
        .chain(app.log.iter().map(|(t, m)| (*t, format!("tui: {m}"))))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let fit = area.height.saturating_sub(2) as usize;
    let lines: Vec<Line> = all
        .iter()
        .skip(all.len().saturating_sub(fit))
        .map(|(t, m)| Line::from(format!("+{t:>6.1}s  {m}")))
        .collect();
    f.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title("events")),
        area,
    );
}

fn draw_help(f: &mut Frame, app: &App, area: Rect) {
    let w = 64.min(area.width);
    let h = (keys(app).count() as u16 + 4).min(area.height);
    let r = Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    };
    let lines: Vec<Line> = keys(app)
        .map(|(k, what)| {
            Line::from(vec![
                Span::styled(
                    format!("{k:<12}"),
                    color(app, Color::Cyan).add_modifier(Modifier::BOLD),
                ),
                Span::raw(*what),
            ])
        })
        .collect();
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(lines).wrap(Wrap { trim: true }).block(
            Block::default()
                .borders(Borders::ALL)
                .title("keys (any key closes)"),
        ),
        r,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::events::{Event, EventKind, FaultWindow};
    use crate::run::report::Second;
    use crate::run::state::{QueueNow, RunState};
    use crate::slo::SloNow;
    use faultline_agent::supervisor::ReplicaStatus;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    fn replica(service: &str, index: u32, state: ReplicaState) -> ReplicaStatus {
        ReplicaStatus {
            name: format!("{service}-{index}"),
            service: service.into(),
            index,
            zone: if index.is_multiple_of(2) { "b" } else { "a" }.into(),
            addr: "127.0.0.1:1".parse().unwrap(),
            state,
            pid: Some(10),
            restarts: if state == ReplicaState::Held { 1 } else { 0 },
            liveness_restarts: 0,
            last_exit: None,
            probe_error: None,
            log: "x".into(),
            container: None,
        }
    }

    fn state() -> RunState {
        RunState {
            experiment: "demo".into(),
            seed: 42,
            target: "the bundled shop".into(),
            agent_url: None,
            agents: Vec::new(),
            stage: Stage::Running,
            elapsed_s: 23.0,
            duration_s: 60.0,
            target_rate: Some(80.0),
            phase: "kill orders-2".into(),
            seconds: (0..23)
                .map(|t| Second {
                    t,
                    requests: 128,
                    ok: 126,
                    errors: 2,
                    dropped: 0,
                    p50_ms: 1.7,
                    p99_ms: 734.5,
                    max_ms: 900.0,
                    sli: Default::default(),
                })
                .collect(),
            windows: vec![FaultWindow {
                fault: "kill orders-2".into(),
                start_s: 10.0,
                end_s: None,
            }],
            slos: vec![
                SloNow {
                    name: "availability".into(),
                    objective: 0.99,
                    sli: Some(0.9843),
                    budget_remaining: -0.57,
                    short_burn: 20.0,
                    long_burn: 15.0,
                    alerting: true,
                    met: false,
                },
                SloNow {
                    name: "latency".into(),
                    objective: 0.95,
                    sli: Some(0.999),
                    budget_remaining: 0.98,
                    short_burn: 0.0,
                    long_burn: 0.1,
                    alerting: false,
                    met: true,
                },
            ],
            replicas: vec![
                replica("auth", 1, ReplicaState::Healthy),
                replica("orders", 1, ReplicaState::Healthy),
                replica("orders", 2, ReplicaState::Held),
                replica("payments", 1, ReplicaState::Paused),
            ],
            breakers: [("auth-1".to_owned(), vec!["cdn open".to_owned()])].into(),
            has_breakers: true,
            faults: vec![faultline_agent::faults::FaultInfo {
                id: "f1".into(),
                kind: "kill".into(),
                target: "orders-2".into(),
                request: faultline_agent::faults::FaultRequest {
                    tree: None,
                    spec: faultline_agent::faults::FaultSpec::Kill { hold: true },
                    target: "orders-2".into(),
                    ttl_ms: None,
                    seed: None,
                },
                applied_ms: 0,
                expires_ms: 0,
                remaining_ms: 5000,
                healed_ms: None,
            }],
            queues: vec![QueueNow {
                name: "payments".into(),
                visible: 12,
                in_flight: 3,
                delayed: 0,
                oldest_age_seconds: 4.0,
                dlq: Some("payments-dlq".into()),
                dlq_depth: Some(5),
            }],
            broker: Some("broker".into()),
            outside: Vec::new(),
            events: vec![Event {
                t_s: 10.0,
                kind: EventKind::FaultApplied {
                    fault: "kill orders-2".into(),
                    id: "f1".into(),
                    instant: false,
                },
                message: "applied: kill orders-2 (f1)".into(),
            }],
            passed: None,
        }
    }

    fn render(w: u16, h: u16, app: &App) -> String {
        let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
        t.draw(|f| draw(f, app)).unwrap();
        let buf = t.backend().buffer().clone();
        let mut out = String::new();
        for y in 0..h {
            for x in 0..w {
                out.push_str(buf[(x, y)].symbol());
            }
            out.push('\n');
        }
        out
    }

    fn app() -> App {
        let mut a = App::default();
        a.set_state(state());
        a.selected = a
            .state
            .replicas
            .iter()
            .position(|r| r.name == "orders-2")
            .unwrap();
        a
    }

    #[test]
    fn trouble_comes_first_a_cut_list_says_so_and_a_tiny_terminal_gets_a_notice() {
        let mut a = app();
        let mut s = state();
        // Many healthy replicas ahead of the ones in trouble, in the agent's order.
        let mut many: Vec<ReplicaStatus> = (1..=30)
            .map(|i| replica("content", i, ReplicaState::Healthy))
            .collect();
        many.append(&mut s.replicas);
        s.replicas = many;
        a.set_state(s);
        let healthy = |r: &ReplicaStatus| !a.in_trouble(r);
        let first_healthy = a.state.replicas.iter().position(healthy).unwrap();
        assert!(
            a.state.replicas[first_healthy..].iter().all(healthy),
            "trouble first"
        );
        let screen = render(160, 48, &a);
        assert!(screen.contains("orders-2"), "{screen}");
        assert!(
            screen.contains("more: ↑↓"),
            "the cut is marked:
{screen}"
        );
        let screen = render(50, 15, &a);
        assert!(screen.contains("terminal too small: 50x15"), "{screen}");
    }

    #[test]
    fn the_key_figures_show_at_80x24() {
        let screen = render(80, 24, &app());
        for want in [
            "demo",
            "[RUNNING]",
            "kill orders-2",
            "availability",
            "98.43%",
            "BURNING",
            "OK",
            "orders-2",
            "DOWN",
            "PAUSED",
            "kill",
            "payments-1",
            "payments ",
            "applied: kill orders-2",
        ] {
            assert!(
                screen.contains(want),
                "`{want}` missing at 80x24:\n{screen}"
            );
        }
    }

    #[test]
    fn a_large_terminal_shows_more() {
        let mut a = app();
        a.log.push((11.0, "pause payments-1 (f2)".into()));
        let screen = render(160, 48, &a);
        for want in [
            "throughput",
            "latency ms",
            "fault active",
            "734",
            "target 80 it/s",
            "budget left",
            "-57%",
            "auth-1",
            "cdn open",
            "> orders-2",
            "UP",
            "payments-dlq".trim_end_matches("-dlq"),
            "tui: pause payments-1",
        ] {
            assert!(
                screen.contains(want),
                "`{want}` missing at 160x48:\n{screen}"
            );
        }
    }

    #[test]
    fn help_lists_the_keys_and_no_color_keeps_the_words() {
        let mut a = app();
        a.help = true;
        a.no_color = true;
        let screen = render(80, 24, &a);
        assert!(screen.contains("kill the replica"), "{screen}");
        assert!(screen.contains("heal every fault"), "{screen}");
        a.help = false;
        let mut t = Terminal::new(TestBackend::new(80, 24)).unwrap();
        t.draw(|f| draw(f, &a)).unwrap();
        let buf = t.backend().buffer();
        let colored = buf.content().iter().any(|c| c.fg != Color::Reset);
        assert!(!colored, "NO_COLOR: no foreground colour anywhere");
        assert!(render(80, 24, &a).contains("BURNING"));
    }

    #[test]
    fn without_breakers_or_messaging_there_is_no_breaker_column_queue_panel_or_b_key() {
        let mut a = app();
        a.state.has_breakers = false;
        a.state.breakers.clear();
        a.state.broker = None;
        a.state.queues.clear();
        let screen = render(160, 48, &a);
        for absent in ["breakers", "closed", "queues", "DLQ"] {
            assert!(
                !screen.contains(absent),
                "`{absent}` shown without breakers or [messaging]:\n{screen}"
            );
        }
        assert!(screen.contains("> orders-2"), "{screen}");
        a.help = true;
        let screen = render(160, 48, &a);
        assert!(screen.contains("heal every fault"), "{screen}");
        assert!(!screen.contains("broker"), "{screen}");
        // With them, both are there.
        let screen = render(160, 48, &app());
        for present in ["breakers", "closed", "queues"] {
            assert!(screen.contains(present), "`{present}` missing:\n{screen}");
        }
    }

    #[test]
    fn proxies_and_externals_follow_the_replicas_with_their_faults() {
        use crate::run::state::OutsideNow;
        let mut a = app();
        a.state.outside = vec![
            OutsideNow {
                name: "db".into(),
                kind: "proxy",
                upstream: "127.0.0.1:5432".into(),
                enabled: true,
            },
            OutsideNow {
                name: "web->payments-api".into(),
                kind: "external",
                upstream: "127.0.0.1:9".into(),
                enabled: true,
            },
            OutsideNow {
                name: "cache".into(),
                kind: "proxy",
                upstream: "127.0.0.1:6379".into(),
                enabled: false,
            },
        ];
        let mut latency = a.state.faults[0].clone();
        latency.kind = "latency".into();
        latency.request.target = "db".into();
        let mut cut = a.state.faults[0].clone();
        cut.kind = "partition".into();
        cut.request.target = "web".into();
        cut.request.spec = faultline_agent::faults::FaultSpec::Partition {
            with: "payments-api".into(),
        };
        a.state.faults.extend([latency, cut]);
        let screen = render(160, 48, &a);
        let line = |name: &str| {
            screen
                .lines()
                .find(|l| l.contains(name))
                .unwrap_or_else(|| panic!("no row for {name}:\n{screen}"))
                .to_owned()
        };
        assert!(line("  db ").contains("proxy") && line("  db ").contains("latency"));
        let ext = line("web->payments-api");
        assert!(
            ext.contains("external") && ext.contains("partition"),
            "{ext}"
        );
        assert!(line("  cache ").contains("off"), "{screen}");
        assert!(
            screen.contains("4 replicas, 3 proxies, 3 faults active"),
            "{screen}"
        );
    }
}
