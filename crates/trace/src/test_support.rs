//! What the importers' tests share: a sink that checks and keeps what an importer produces,
//! and the record the tests write most. Test builds only.

use crate::{AllocKind, Event, Record, TraceError, Validator};
use proptest::prelude::*;

/// The sink an importer writes to.
pub(crate) type Sink<'a> = dyn FnMut(Record) -> Result<(), TraceError> + 'a;

/// Runs `convert` (an importer given its sink) and returns its summary with every record it
/// produced, each checked as part of a valid Mallard trace as it arrives.
pub(crate) fn import<S>(
    convert: impl FnOnce(&mut Sink) -> Result<S, TraceError>,
) -> Result<(S, Vec<Record>), TraceError> {
    let mut recs = Vec::new();
    let mut v = Validator::new();
    let sum = convert(&mut |r| {
        v.check(&r).expect("importer output is a valid trace");
        recs.push(r);
        Ok(())
    })?;
    Ok((sum, recs))
}

/// `malloc(size)` returning object `id`.
pub(crate) fn malloc(id: u64, size: u64) -> Event {
    Event::Alloc { id, size, align: 0, kind: AllocKind::Malloc }
}

/// `aligned_alloc(align, size)` returning object `id`.
pub(crate) fn aligned(id: u64, size: u64, align: u64) -> Event {
    Event::Alloc { id, size, align, kind: AllocKind::Aligned }
}

/// `event` on `thread` at `timestamp_ns`, of the C domain.
pub(crate) fn at(thread: u32, timestamp_ns: u64, event: Event) -> Record {
    Record {
        thread,
        timestamp_ns: Some(timestamp_ns),
        domain: crate::model::Domain::C,
        event,
    }
}

/// What an importer's robustness test feeds it: up to 300 arbitrary bytes, lenient or not.
pub(crate) fn any_input() -> impl Strategy<Value = (Vec<u8>, bool)> {
    (
        proptest::collection::vec(any::<u8>(), 0..300),
        any::<bool>(),
    )
}
