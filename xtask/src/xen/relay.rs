//! The dom0's relay: the `@@XH` marker lines on the serial console turned into one outcome per
//! domU.

use std::collections::BTreeMap;

use super::util::tail_lines;
use super::{DomuOutcome, DomuSpec, XL_HUNG_STATUS};

/// Marker lines between dom0 and [`parse_relay`].
const MARK: &str = "@@XH ";

/// One domU's block as relayed by dom0.
#[derive(Default)]
pub(super) struct Block {
    pub(super) begin: BTreeMap<String, String>,
    pub(super) xl: Vec<String>,
    pub(super) con: Vec<String>,
    pub(super) end: Option<BTreeMap<String, String>>,
}

/// Turn the serial text of a domU run into outcomes; `Err` when dom0 failed or the run ended
/// before every domU was reported.
pub(super) fn parse_relay(text: &str, specs: &[DomuSpec]) -> Result<Vec<DomuOutcome>, String> {
    let mut blocks: Vec<Block> = specs.iter().map(|_| Block::default()).collect();
    let mut done = false;
    for line in text.lines() {
        let Some(pos) = line.find(MARK) else { continue };
        let rest = &line[pos + MARK.len()..];
        let (kind, rest) = rest.split_once(' ').unwrap_or((rest, ""));
        match kind {
            "fatal" => return Err(format!("dom0 failed: {rest}")),
            "done" => done = true,
            "begin" | "xl" | "con" | "end" => {
                let (idx, body) = rest.split_once(' ').unwrap_or((rest, ""));
                let Some(block) = idx.parse::<usize>().ok().and_then(|i| blocks.get_mut(i)) else {
                    continue;
                };
                match kind {
                    "begin" => block.begin = parse_fields(body),
                    "xl" => block.xl.push(body.to_string()),
                    "con" => block.con.push(body.to_string()),
                    _ => block.end = Some(parse_fields(body)),
                }
            }
            _ => {}
        }
    }
    let mut outcomes = Vec::new();
    for (spec, block) in specs.iter().zip(blocks) {
        let Some(end) = &block.end else {
            return Err(format!(
                "the run ended before domU {:?} was reported",
                spec.name
            ));
        };
        outcomes.push(block_outcome(spec, &block, end));
    }
    if !done {
        return Err("dom0 did not report the end of its jobs".into());
    }
    Ok(outcomes)
}

/// `k=v k=v` fields of an end line.
pub(super) fn parse_fields(body: &str) -> BTreeMap<String, String> {
    body.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub(super) fn block_outcome(
    spec: &DomuSpec,
    block: &Block,
    end: &BTreeMap<String, String>,
) -> DomuOutcome {
    let num = |k: &str| end.get(k).and_then(|v| v.parse::<i64>().ok());
    let status = num("status");
    let timed_out = num("timed_out") == Some(1);
    let mut console_log = block.con.join("\n");
    if !block.con.is_empty() && num("nl") != Some(0) {
        console_log.push('\n');
    }
    let xl_log = block.xl.join("\n");
    let shutdown_reason = xl_log.lines().find_map(shutdown_reason_in);
    let mut errors = Vec::new();
    if timed_out {
        let limit = block
            .begin
            .get("limit_cs")
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        errors.push(format!(
            "did not shut down within its {:.0} s limit; dom0 destroyed it",
            limit / 100.0
        ));
    }
    match status {
        Some(0) => {}
        Some(s) if i32::try_from(s) == Ok(XL_HUNG_STATUS) => {
            errors.push("xl create -F never returned".into())
        }
        Some(s) => errors.push(format!(
            "xl create failed (status {s}):\n{}",
            xl_errors(&xl_log)
        )),
        None => errors.push("xl status unknown".into()),
    }
    if shutdown_reason.is_none() && errors.is_empty() {
        errors.push(format!(
            "xl reported no shutdown reason:\n{}",
            tail_lines(&xl_log, 15)
        ));
    }
    // Bytes that were not UTF-8 became U+FFFD, which changes the length: no check then.
    let comparable = !console_log.contains(char::REPLACEMENT_CHARACTER);
    if let Some(bytes) = num("bytes").filter(|_| comparable) {
        if bytes != console_log.len() as i64 {
            errors.push(format!(
                "console relay incomplete: {} of {bytes} bytes",
                console_log.len()
            ));
        }
    }

    DomuOutcome {
        name: spec.name.clone(),
        console_log,
        shutdown_reason,
        seconds: num("cs")
            .filter(|_| status.is_some_and(|s| i32::try_from(s) != Ok(XL_HUNG_STATUS)))
            .map(|cs| cs as f64 / 100.0),
        timed_out,
        xl_log,
        error: (!errors.is_empty()).then(|| errors.join("; ")),
    }
}

/// The error lines of an xl log (its tail when none says "error").
pub(super) fn xl_errors(xl_log: &str) -> String {
    let errors: Vec<&str> = xl_log
        .lines()
        .filter(|l| l.to_ascii_lowercase().contains("error"))
        .collect();
    if errors.is_empty() {
        tail_lines(xl_log, 15)
    } else {
        errors.join("\n")
    }
}

/// R from "Domain N has shut down, reason code R ...".
pub(super) fn shutdown_reason_in(line: &str) -> Option<u32> {
    const NEEDLE: &str = "has shut down, reason code ";
    let rest = &line[line.find(NEEDLE)? + NEEDLE.len()..];
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn reason_code_parsed() {
        assert_eq!(
            shutdown_reason_in("Domain 3 has shut down, reason code 3 0x3"),
            Some(3)
        );
        assert_eq!(shutdown_reason_in("nothing"), None);
    }

    /// A 16 MiB domU `g`.
    fn spec() -> DomuSpec {
        DomuSpec {
            name: "g".into(),
            kind: Default::default(),
            elf: PathBuf::new(),
            memory_mib: 16,
            cmdline: String::new(),
            vcpus: 1,
            ramdisk: None,
        }
    }

    #[test]
    fn relay_parsed() {
        let spec = spec();
        let serial = "junk\n@@XH begin 0 g limit_cs=100\n@@XH xl 0 Domain 1 has shut down, reason code 0 0x0\n\
                      @@XH con 0 hello\n@@XH con 0 \n@@XH end 0 status=0 cs=420 timed_out=0 bytes=7 nl=1\n@@XH done\n";
        let out = parse_relay(serial, &[spec]).unwrap();
        assert_eq!(out[0].console_log, "hello\n\n");
        assert_eq!(out[0].shutdown_reason, Some(0));
        assert_eq!(out[0].seconds, Some(4.2));
        assert_eq!(out[0].error, None);
    }

    #[test]
    fn relay_fatal_is_an_error() {
        let spec = spec();
        let err = parse_relay(
            "@@XH fatal insmod xenfs failed\n",
            std::slice::from_ref(&spec),
        )
        .unwrap_err();
        assert!(err.contains("insmod xenfs failed"));
        assert!(parse_relay("@@XH ready\n", &[spec]).is_err());
    }
}
