//! The result table: one row per figure, printed as a markdown table.

/// One figure of one scenario, against its baseline.
#[derive(Debug, Clone)]
pub struct Row {
    pub scenario: String,
    pub measure: String,
    pub ours: String,
    pub baseline: String,
    /// RauskuClaw / baseline.
    pub ratio: String,
    pub target: String,
    /// Whether the target is met (`None`: no target, or not measured).
    pub met: Option<bool>,
}

/// The rows as a markdown table; a scenario's name is printed on its first row only.
pub fn table(rows: &[Row]) -> String {
    let header = [
        "scenario",
        "measure",
        "RauskuClaw",
        "baseline",
        "ratio",
        "target",
        "met",
    ];
    let mut cells: Vec<[String; 7]> = Vec::with_capacity(rows.len());
    let mut last_scenario = "";
    for r in rows {
        let scenario = if r.scenario == last_scenario {
            String::new()
        } else {
            r.scenario.clone()
        };
        last_scenario = &r.scenario;
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "",
        };
        cells.push([
            scenario,
            r.measure.clone(),
            r.ours.clone(),
            r.baseline.clone(),
            r.ratio.clone(),
            r.target.clone(),
            met.to_string(),
        ]);
    }
    let width = |i: usize| {
        cells
            .iter()
            .map(|c| c[i].chars().count())
            .chain([header[i].chars().count(), 3])
            .max()
            .unwrap_or(3)
    };
    let widths: Vec<usize> = (0..header.len()).map(width).collect();
    let line = |values: &[String]| {
        let padded: Vec<String> = values
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v}{}", " ".repeat(w - v.chars().count())))
            .collect();
        format!("| {} |\n", padded.join(" | "))
    };
    let mut out = line(&header.map(String::from));
    out.push_str(&line(
        &widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>(),
    ));
    for c in &cells {
        out.push_str(&line(c));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_names_are_not_repeated() {
        let row = |m: &str| Row {
            scenario: "(b) x".into(),
            measure: m.into(),
            ours: "1".into(),
            baseline: "2".into(),
            ratio: "0.50×".into(),
            target: String::new(),
            met: Some(false),
        };
        let t = table(&[row("a"), row("b")]);
        assert_eq!(t.matches("(b) x").count(), 1, "{t}");
        assert_eq!(t.lines().count(), 4);
        assert!(
            t.lines().all(|l| l.starts_with("| ") && l.ends_with(" |")),
            "{t}"
        );
    }
}
