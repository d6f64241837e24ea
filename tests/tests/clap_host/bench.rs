//! `cargo xtask bench-process`: what one `process()` block costs with subnormal input against
//! normal input, on the release bundle, while a capture records and the input passes through.
//! Prints figures; asserts nothing about time (the machine decides those).

use crate::host::Plugin;
use crate::render::{seconds, Input, Span};
use crate::{custom_bars, CUSTOM_LENGTH, OFF, ON};

const BLOCK: usize = 512;
const ROUNDS: usize = 7;

pub(crate) fn process_cost_of_denormal_input() {
    let rate = 48_000.0;
    let mut a = Plugin::new();
    a.activate(rate, BLOCK);
    // A long capture armed and generating off, so every block records into the ring too.
    a.render(Span::playing(0, BLOCK).changes(&[
        ("Generate after capture", OFF),
        ("Capture length", CUSTOM_LENGTH),
        ("Custom bars", custom_bars(32)),
        ("Capture", ON),
    ]));
    let frames = seconds(10.0, rate);
    // Only the time inside `process` counts: the host making subnormal input is slow itself.
    let mut per_block = |input: Input, position: &mut i64| {
        let out = a.render(
            Span::playing(*position, frames)
                .input(input)
                .blocks(&[BLOCK]),
        );
        *position += frames as i64;
        out.process_seconds / (frames / BLOCK) as f64
    };
    let mut position = BLOCK as i64;
    per_block(Input::Music, &mut position); // warm-up
    let (mut normal, mut denormal) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        normal.push(per_block(Input::Music, &mut position));
        denormal.push(per_block(Input::Denormal, &mut position));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (n, d) = (median(&mut normal), median(&mut denormal));
    println!("CPU: {}", stemgen::bench::cpu_name());
    println!(
        "process() of {BLOCK} frames at 48 kHz (median of {ROUNDS} runs of 10 s): normal input \
         {:.2} us, subnormal input {:.2} us, ratio {:.2}x",
        n * 1e6,
        d * 1e6,
        d / n
    );
}
