//! The run transcript: one JSON object per line, appended and flushed as each
//! event happens, so a run that dies midway keeps everything up to that point.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde_json::Value;

use crate::events::{Observer, RunEvent};

/// An append-only JSON Lines event log.
#[derive(Debug)]
pub struct Transcript {
    path: Option<PathBuf>,
    file: Option<File>,
    warned: bool,
}

impl Transcript {
    /// Opens (creating folders) a transcript at `path`, appending.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Transcript {
            path: Some(path.to_path_buf()),
            file: Some(file),
            warned: false,
        })
    }

    /// A transcript that records nothing.
    pub fn disabled() -> Self {
        Transcript {
            path: None,
            file: None,
            warned: false,
        }
    }

    /// Where the transcript is written.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Appends one line: `{"ts": ..., "event": kind, ...fields}`, the
    /// event's own fields as serialized. A write failure is reported once
    /// and does not stop the run.
    fn write(&mut self, event: &RunEvent) {
        let Some(file) = self.file.as_mut() else {
            return;
        };
        let Ok(Value::Object(mut obj)) = serde_json::to_value(event) else {
            return;
        };
        obj.insert(
            "ts".into(),
            humantime::format_rfc3339_millis(SystemTime::now())
                .to_string()
                .into(),
        );
        let mut line = Value::Object(obj).to_string();
        line.push('\n');
        // One write per line so a concurrent reader never sees half an event.
        if let Err(e) = file.write_all(line.as_bytes()).and_then(|_| file.flush()) {
            if !self.warned {
                crate::errln!("autodev: warning: cannot write the transcript: {e}");
                self.warned = true;
            }
        }
    }
}

/// The transcript records every event of the run's record, as it happens.
impl Observer for Transcript {
    fn on(&mut self, event: &RunEvent) {
        if event.recorded() {
            self.write(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_lines_of_json_with_timestamps() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("runs/t.jsonl");
        let mut t = Transcript::open(&p).unwrap();
        t.on(&RunEvent::Prompt {
            iteration: 0,
            messages: Vec::new(),
            chars: 0,
        });
        t.on(&RunEvent::Export {
            zip: "out.zip".into(),
            files: 1,
        });
        let text = std::fs::read_to_string(&p).unwrap();
        let events: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0]["event"], "prompt");
        assert_eq!(events[0]["iteration"], 0);
        assert!(events[1]["ts"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn as_an_observer_it_records_the_record_and_not_the_live_view() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("t.jsonl");
        let mut t = Transcript::open(&p).unwrap();
        t.on(&RunEvent::Note("a line for the terminal".into()));
        t.output(crate::term::Stream::Out, b"live");
        t.on(&RunEvent::Export {
            zip: "out.zip".into(),
            files: 3,
        });
        let text = std::fs::read_to_string(&p).unwrap();
        let events: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(events.len(), 1, "{text}");
        assert_eq!(events[0]["event"], "export");
        assert_eq!(events[0]["files"], 3);
        assert!(events[0]["ts"].is_string());
    }
}
