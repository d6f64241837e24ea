//! State and takes: the plugin's session as a saved state holds it, waiting for takes,
//! checking that a take plays in place, and editing a saved parameter value.

use serde_json::Value;
use stemgen::audio::Audio;

use crate::host::Plugin;
use crate::render::Stereo;
use crate::GENERATION_TIMEOUT;

/// The plugin's `Session` in a saved state: nice-plug writes an 8-byte length, then JSON whose
/// persisted field "session" is itself a JSON string.
pub(crate) fn session_of(state: &[u8]) -> Value {
    let (length, json) = state.split_at(8);
    let length = u64::from_le_bytes(length.try_into().unwrap());
    assert_eq!(length as usize, json.len(), "state length prefix");
    let state: Value = serde_json::from_slice(json).expect("the state is not JSON");
    let session = state["fields"]["session"]
        .as_str()
        .unwrap_or_else(|| panic!("no session in the state: {state}"));
    serde_json::from_str(session).expect("the session is not JSON")
}

pub(crate) fn takes(session: &Value) -> &[Value] {
    session["takes"].as_array().map_or(&[], Vec::as_slice)
}

/// Waits (rendering `keep_playing` meanwhile) until the session holds `count` takes.
pub(crate) fn wait_for_takes(
    plugin: &mut Plugin,
    count: usize,
    mut keep_playing: impl FnMut(&mut Plugin),
) -> Value {
    plugin.wait_for("generated take", GENERATION_TIMEOUT, |p| {
        keep_playing(p);
        let session = p.session();
        (takes(&session).len() >= count).then_some(session)
    })
}

/// Checks `out`, rendered from timeline sample `start` with only the stem audible, against the
/// take's own audio placed with its first sample at timeline sample `anchor`.
pub(crate) fn assert_plays_take(out: &Stereo, start: i64, take: &Audio, anchor: i64) {
    let len = take.num_frames() as i64;
    let mut expected_peak = 0.0f32;
    for (i, (&l, &r)) in out.left.iter().zip(&out.right).enumerate() {
        let t = start + i as i64;
        let idx = t - anchor;
        let (el, er) = if (0..len).contains(&idx) {
            let idx = idx as usize;
            (take.channels[0][idx], take.channels[1][idx])
        } else {
            (0.0, 0.0)
        };
        expected_peak = expected_peak.max(el.abs()).max(er.abs());
        assert!(
            (l - el).abs() <= 1e-5 && (r - er).abs() <= 1e-5,
            "timeline sample {t} (take sample {idx}): played ({l}, {r}), the take has ({el}, {er})"
        );
    }
    let overlaps = start < anchor + len && anchor < start + out.left.len() as i64;
    assert!(
        !overlaps || expected_peak > 1e-3,
        "the take is (nearly) silent here, so this comparison proves nothing"
    );
}

/// `state` with the plain value of parameter `id` replaced by `value` (as a project saved with it would be).
pub(crate) fn with_param(state: &[u8], id: &str, value: Value) -> Vec<u8> {
    let mut json: Value = serde_json::from_slice(&state[8..]).expect("the state is not JSON");
    let params = json["params"]
        .as_object_mut()
        .expect("no params object in the state");
    // nice-plug tags each value with its kind: {"bool": false}, {"f32": 0.5}, ...
    let tagged = params
        .get_mut(id)
        .and_then(Value::as_object_mut)
        .unwrap_or_else(|| panic!("no tagged parameter {id} in the state"));
    let kind = tagged
        .keys()
        .next()
        .cloned()
        .expect("an empty parameter value");
    tagged.insert(kind, value);
    let body = serde_json::to_vec(&json).unwrap();
    let mut bytes = (body.len() as u64).to_le_bytes().to_vec();
    bytes.extend(body);
    bytes
}

/// `state` with its session changed by `edit` (as a project saved with those settings would be).
pub(crate) fn with_session(state: &[u8], edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut json: Value = serde_json::from_slice(&state[8..]).expect("the state is not JSON");
    let mut session: Value =
        serde_json::from_str(json["fields"]["session"].as_str().expect("no session"))
            .expect("the session is not JSON");
    edit(&mut session);
    json["fields"]["session"] = Value::String(session.to_string());
    let body = serde_json::to_vec(&json).unwrap();
    let mut bytes = (body.len() as u64).to_le_bytes().to_vec();
    bytes.extend(body);
    bytes
}
