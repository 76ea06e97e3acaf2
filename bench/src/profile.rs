//! `bench __profile <what> [seconds]`: one contender in a loop, to run under `perf` or
//! `valgrind --tool=callgrind` (see the README).

use std::time::{Duration, Instant};

use crate::config::Config;
use crate::exec::Flavor;

fn flavor(name: &str) -> Option<Flavor> {
    Some(match name {
        "tokio-ct" => Flavor::TokioCurrent,
        "tokio-mt" => Flavor::TokioMulti,
        "smol" => Flavor::SmolSingle,
        "blocking" => Flavor::Blocking,
        _ => return None,
    })
}

/// Run `what` repeatedly for about `seconds` (default 5). Returns the exit code.
pub fn main(args: &[String]) -> i32 {
    let what = args.first().map(String::as_str).unwrap_or("");
    let seconds: f64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let config = Config::full();
    let (kind, name) = what.split_once('-').unwrap_or((what, ""));
    let mut rounds = 0u64;
    let mut once: Box<dyn FnMut()> = match kind {
        "pipeline" if name == "floor" => {
            let mut p = crate::pipeline::Profile::new(&config, None);
            Box::new(move || p.once())
        }
        "pipeline" => match flavor(name) {
            Some(f) => {
                let mut p = crate::pipeline::Profile::new(&config, Some(f));
                Box::new(move || p.once())
            }
            None => return usage(),
        },
        "http" => {
            let mut p = crate::http::Profile::new(&config, name);
            Box::new(move || p.once())
        }
        "ttfe" => match flavor(name) {
            Some(f) => {
                let mut p = crate::ttfe::Profile::new(&config, f);
                Box::new(move || p.once())
            }
            None => return usage(),
        },
        "fanout" => {
            let server = name.to_string();
            let config = config.clone();
            Box::new(move || crate::fanout::profile_once(&server, &config))
        }
        "sse" => {
            let mut p = crate::sse::Profile::new(&config, name == "peer");
            Box::new(move || p.once())
        }
        _ => return usage(),
    };
    while Instant::now() < deadline {
        once();
        rounds += 1;
    }
    eprintln!("{what}: {rounds} rounds");
    0
}

fn usage() -> i32 {
    eprintln!(
        "usage: bench __profile <pipeline-{{floor,tokio-ct,tokio-mt,smol,blocking}} | \
         http-{{floor,parse,openai,tokio-ct,tokio-mt,smol,blocking}} | ttfe-<flavor> | fanout-{{tokio,smol,blocking}} | sse-{{core,peer}}> [seconds]"
    );
    2
}
