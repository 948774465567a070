//! Checking the model's invariants on a stream of records.
//!
//! The invariants (stated once, here; [`crate::model`] describes them in prose):
//!
//! 1. ids of new objects — the `id` of an `Alloc`, the `new` of a `Realloc` — are handed out in
//!    order 0, 1, 2, ..., each exactly once;
//! 2. a `Free`, and the `old` side of a `Realloc`, names a live object, which then stops being
//!    live;
//! 3. an alignment is 0 or a power of two.
//!
//! The live objects are a [`LiveTable`]: memory in proportion to the peak number of live
//! objects, not to the objects ever created (a trace of a billion malloc/free pairs of one
//! object is checked in a few kilobytes), with direct indexing for the young objects that make
//! up most of a trace. An id that is not the next one is refused *before* the table grows.

use crate::error::TraceError;
use crate::live::LiveTable;
use crate::model::{Event, ObjectId, Record};
use crate::{Decoder, TraceReader};

/// Checks records one at a time against the model's invariants.
///
/// ```
/// use mallard_trace::{Event, AllocKind, Record, Validator};
/// let mut v = Validator::new();
/// v.check(&Record::new(Event::Alloc { id: 0, size: 48, align: 0, kind: AllocKind::Malloc })).unwrap();
/// assert!(v.check(&Record::new(Event::Free { id: 1 })).is_err());
/// assert_eq!(v.live_objects(), 1);
/// ```
#[derive(Clone, Debug, Default)]
pub struct Validator {
    /// The live objects; its `next_id` is the id the next new object must have.
    live: LiveTable<()>,
}

impl Validator {
    pub fn new() -> Self {
        Validator::default()
    }

    /// Checks one record and, if it is valid, applies it. On error the state is unchanged and
    /// the message says what was wrong (the caller adds the file and location).
    #[inline]
    pub fn check(&mut self, rec: &Record) -> Result<(), String> {
        check_live(&mut self.live, rec, ()).map(drop)
    }

    /// Objects live now.
    pub fn live_objects(&self) -> u64 {
        self.live.len()
    }

    /// Objects created so far, which is also the id the next new object must have.
    pub fn next_id(&self) -> ObjectId {
        self.live.next_id()
    }

    /// Whether object `id` is live now.
    pub fn is_live(&self, id: ObjectId) -> bool {
        self.live.get(id).is_some()
    }
}

/// The model check of one record against a table of the live objects, each with a value the
/// caller keeps there (`()` for the [`Validator`], the size for [`crate::stats::TraceStats`],
/// which so checks and counts with one table): if the record is valid, applies it (the object
/// it creates gets `made`) and returns the value of the object it ends, if any. On error the
/// table is unchanged. The one place the invariants are decided. Inlined into the caller's
/// batch loop (it runs once an event); every message is built out of line.
#[inline(always)]
pub(crate) fn check_live<V>(
    live: &mut LiveTable<V>,
    rec: &Record,
    made: V,
) -> Result<Option<V>, String> {
    match rec.event {
        Event::Alloc { id, align, .. } => {
            check_align(align)?;
            check_new(live, id, "alloc of object")?;
            live.push(made);
            Ok(None)
        }
        // One look-up each: `remove` changes nothing when the object is not live.
        Event::Free { id } => match live.remove(id) {
            Some(v) => Ok(Some(v)),
            None => Err(not_live(live, id, "free of")),
        },
        Event::Realloc { old, new, .. } => {
            if let Err(e) = check_new(live, new, "realloc to object") {
                if live.get(old).is_none() {
                    return Err(not_live(live, old, "realloc of"));
                }
                return Err(e);
            }
            let Some(v) = live.remove(old) else {
                return Err(not_live(live, old, "realloc of"));
            };
            live.push(made);
            Ok(Some(v))
        }
    }
}

#[inline(always)]
fn check_new<V>(live: &LiveTable<V>, id: ObjectId, what: &str) -> Result<(), String> {
    if id == live.next_id() {
        Ok(())
    } else {
        Err(not_next(live, id, what))
    }
}

#[cold]
#[inline(never)]
fn not_next<V>(live: &LiveTable<V>, id: ObjectId, what: &str) -> String {
    format!(
        "{what} {id}, but the next new object must be {} \
         (ids of new objects count up from 0 by one)",
        live.next_id()
    )
}

#[cold]
#[inline(never)]
fn not_live<V>(live: &LiveTable<V>, id: ObjectId, what: &str) -> String {
    if id < live.next_id() {
        format!("{what} object {id}, which is not live (it was freed before)")
    } else {
        format!("{what} object {id}, which is not live (nothing allocated it before this event)")
    }
}

/// The model check of one record, and what the caller does with a valid one: the reader's
/// [`Validator`], or a consumer that checks the records itself against its own table
/// ([`crate::stats::TraceStats`]). A trait rather than a closure so that its `#[inline(always)]`
/// body is inlined into the batch loop (a closure called from two places is a call per record).
pub(crate) trait Check {
    /// As [`Validator::check`]: on error nothing changes and the message says what was wrong.
    fn check_record(&mut self, rec: &Record) -> Result<(), String>;
}

impl Check for Validator {
    #[inline(always)]
    fn check_record(&mut self, rec: &Record) -> Result<(), String> {
        self.check(rec)
    }
}

impl TraceReader {
    /// Reads the rest of the trace, handing `f` its records a batch at a time, in order: up to
    /// 128 (the decoder's batch) for a binary trace, one for CSV. Each record is checked as the
    /// iterator checks it, and an error names the same place; `f` sees every record before the
    /// one at fault. Stops at the first error, the reader's or `f`'s; afterwards the iterator
    /// returns `None`.
    ///
    /// For consumers that loop over a whole trace: no record goes through the iterator's
    /// `Option<Result<Record, _>>` (for the decoder alone, a third of its time).
    ///
    /// ```
    /// # let bytes = {
    /// #     let mut w = mallard_trace::TraceWriter::create(&std::env::temp_dir().join("fe.mtr"),
    /// #         &Default::default(), mallard_trace::Form::Binary).unwrap();
    /// #     for id in 0..300 {
    /// #         w.push(&mallard_trace::Record::new(mallard_trace::Event::Alloc { id, size: 8, align: 0,
    /// #             kind: mallard_trace::AllocKind::Malloc })).unwrap();
    /// #     }
    /// #     w.finish().unwrap();
    /// #     std::fs::read(std::env::temp_dir().join("fe.mtr")).unwrap()
    /// # };
    /// let mut reader = mallard_trace::TraceReader::from_bytes("t.mtr".as_ref(), bytes)?;
    /// let mut events = 0;
    /// reader.for_each_batch(|records| {
    ///     events += records.len();
    ///     Ok::<(), mallard_trace::TraceError>(())
    /// })?;
    /// assert_eq!(events, 300);
    /// # Ok::<(), mallard_trace::TraceError>(())
    /// ```
    pub fn for_each_batch<E: From<TraceError>>(
        &mut self,
        mut f: impl FnMut(&[Record]) -> Result<(), E>,
    ) -> Result<(), E> {
        if !matches!(self.decoder, Decoder::Binary(_)) {
            for rec in self.by_ref() {
                f(std::slice::from_ref(&rec?))?;
            }
            return Ok(());
        }
        match self.validator.take() {
            Some(mut v) => {
                let r = self.binary_batches(Some(&mut v), f);
                self.validator = Some(v);
                r
            }
            None => self.binary_batches(None::<&mut Validator>, f),
        }
    }

    /// Reads the rest of the trace, handing `check` each record in order: `check` *is* the model
    /// check (and does with a valid record what the caller wants), in place of the reader's
    /// [`Validator`], which [`TraceReader::take_validator`] must have taken out first. An error
    /// of `check` is reported as the reader's own would be, naming the same place. Stops at the
    /// first error; afterwards the iterator returns `None`.
    pub(crate) fn for_each_checked(&mut self, check: &mut impl Check) -> Result<(), TraceError> {
        debug_assert!(
            self.validator.is_none(),
            "the reader's own check is taken out"
        );
        if matches!(self.decoder, Decoder::Binary(_)) {
            return self.binary_batches(Some(check), |_| Ok::<(), TraceError>(()));
        }
        while let Some(rec) = self.next() {
            if let Err(msg) = check.check_record(&rec?) {
                self.done = true;
                return Err(TraceError::invalid(self, msg));
            }
        }
        Ok(())
    }

    /// Takes out the reader's model check, if it is on and has seen no record yet (then the
    /// caller must check each record itself, through [`TraceReader::for_each_checked`]);
    /// `None` leaves the reader as it was.
    pub(crate) fn take_validator(&mut self) -> Option<Validator> {
        match &self.validator {
            // A valid record creates an object or ends one, which must have been created
            // before; an invalid one ends the reading.
            Some(v) if v.next_id() == 0 && !self.done => self.validator.take(),
            _ => None,
        }
    }

    /// The batch loop of a binary trace: each record through `check` (the model check; `None`
    /// for an unchecked reader, whose loop then has no check in it at all), then the valid ones
    /// to `f`, a batch at a time.
    #[inline(always)]
    fn binary_batches<E: From<TraceError>>(
        &mut self,
        mut check: Option<&mut impl Check>,
        mut f: impl FnMut(&[Record]) -> Result<(), E>,
    ) -> Result<(), E> {
        if self.done {
            return Ok(());
        }
        // Done whatever happens below: the iterator must not resume in the middle of a batch.
        self.done = true;
        let Decoder::Binary(d) = &mut self.decoder else {
            unreachable!("only called for a binary trace")
        };
        loop {
            if d.decoded().is_empty() && !d.fill()? {
                return Ok(());
            }
            let recs = d.decoded();
            let fault = match &mut check {
                Some(check) => recs
                    .iter()
                    .enumerate()
                    .find_map(|(k, rec)| check.check_record(rec).err().map(|msg| (k, msg))),
                None => None,
            };
            let Some((k, msg)) = fault else {
                let n = recs.len();
                f(recs)?;
                d.consume(n);
                continue;
            };
            f(&recs[..k])?;
            // The record at fault counts as reached, so that the error names it.
            d.consume(k + 1);
            return Err(TraceError::invalid(self, msg).into());
        }
    }
}

/// Alignment 0 (the default) or a power of two.
#[inline]
pub fn check_align(align: u64) -> Result<(), String> {
    if align & align.wrapping_sub(1) == 0 {
        Ok(())
    } else {
        Err(bad_align(align))
    }
}

#[cold]
#[inline(never)]
fn bad_align(align: u64) -> String {
    format!("alignment {align} is neither 0 nor a power of two")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::AllocKind;

    fn alloc(id: u64) -> Record {
        Record::new(Event::Alloc { id, size: 16, align: 0, kind: AllocKind::Malloc })
    }

    #[test]
    fn accepts_a_valid_stream_and_counts_live_objects() {
        let mut v = Validator::new();
        for id in 0..130 {
            v.check(&alloc(id)).unwrap();
        }
        v.check(&Record::new(Event::Free { id: 64 })).unwrap();
        v.check(&Record::new(Event::Realloc { old: 3, new: 130, size: 99 }))
            .unwrap();
        assert_eq!(v.live_objects(), 129);
        assert_eq!(v.next_id(), 131);
        assert!(!v.is_live(3) && !v.is_live(64) && v.is_live(130) && !v.is_live(131));
    }

    #[test]
    fn rejects_model_violations_and_leaves_state_unchanged() {
        let mut v = Validator::new();
        v.check(&alloc(0)).unwrap();
        v.check(&alloc(1)).unwrap();
        v.check(&Record::new(Event::Free { id: 0 })).unwrap();

        let err = v.check(&Record::new(Event::Free { id: 0 })).unwrap_err();
        assert_eq!(
            err,
            "free of object 0, which is not live (it was freed before)"
        );
        let err = v.check(&Record::new(Event::Free { id: 7 })).unwrap_err();
        assert_eq!(
            err,
            "free of object 7, which is not live (nothing allocated it before this event)"
        );
        assert!(v
            .check(&alloc(5))
            .unwrap_err()
            .contains("next new object must be 2"));
        assert!(v.check(&alloc(1)).is_err(), "an id is handed out only once");
        let bad_align = Record::new(Event::Alloc {
            id: 2,
            size: 8,
            align: 24,
            kind: AllocKind::Aligned,
        });
        assert!(v.check(&bad_align).unwrap_err().contains("alignment 24"));
        // A realloc whose new id is wrong must not free its old object.
        assert!(v
            .check(&Record::new(Event::Realloc { old: 1, new: 9, size: 1 }))
            .is_err());
        assert!(v.is_live(1));
        assert_eq!(v.live_objects(), 1);
        assert_eq!(v.next_id(), 2);
    }

    /// The records and the error a reader gives, through the iterator and through
    /// `for_each_batch` (with the batch sizes it handed out).
    fn both_ways(bytes: &[u8]) -> [(Vec<Record>, Option<String>, Vec<usize>); 2] {
        let open = || TraceReader::from_bytes(std::path::Path::new("t.mtr"), bytes.to_vec());
        let (mut recs, mut err) = (Vec::new(), None);
        for rec in open().unwrap() {
            match rec {
                Ok(r) => recs.push(r),
                Err(e) => err = Some(e.to_string()),
            }
        }
        let iterated = (recs, err, vec![]);
        let (mut recs, mut sizes) = (Vec::new(), Vec::new());
        let mut reader = open().unwrap();
        let err = reader
            .for_each_batch(|batch| {
                recs.extend_from_slice(batch);
                sizes.push(batch.len());
                Ok::<(), TraceError>(())
            })
            .err()
            .map(|e| e.to_string());
        assert!(reader.next().is_none(), "the iterator does not resume");
        [iterated, (recs, err, sizes)]
    }

    /// The bytes of a trace of `recs` in `form`, written without the model check.
    pub(crate) fn written(recs: &[Record], form: crate::Form) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        let mut w = crate::TraceWriter::create(&path, &Default::default(), form).unwrap();
        for r in recs {
            w.push(r).unwrap();
        }
        w.finish().unwrap();
        std::fs::read(&path).unwrap()
    }

    #[test]
    fn batches_hold_the_iterators_records_and_errors() {
        // 300 objects, then a double free of object 5 at event 301 (in the third batch).
        let mut recs: Vec<Record> = (0..300).map(alloc).collect();
        recs.push(Record::new(Event::Free { id: 5 }));
        let valid = recs.clone();
        recs.push(Record::new(Event::Free { id: 5 }));
        recs.push(Record::new(Event::Free { id: 6 }));

        let [iterated, batched] = both_ways(&written(&valid, crate::Form::Binary));
        assert_eq!(iterated.0, valid);
        assert_eq!((&batched.0, &batched.1), (&iterated.0, &iterated.1));
        assert_eq!(batched.2, [128, 128, 45], "the decoder's batches");

        let [iterated, batched] = both_ways(&written(&recs, crate::Form::Binary));
        assert_eq!(iterated.0, valid);
        let msg = "t.mtr: byte 20 (event 301): free of object 5, which is not live (it was freed \
                   before)";
        assert_eq!(iterated.1.as_deref(), Some(msg));
        assert_eq!((&batched.0, &batched.1), (&iterated.0, &iterated.1));
        assert_eq!(batched.2, [128, 128, 45]);

        // CSV: a record at a time, the same records and error.
        let [iterated, batched] = both_ways(&written(&recs, crate::Form::Csv));
        assert_eq!(iterated.0, valid);
        assert!(iterated.1.as_deref().unwrap().contains("which is not live"));
        assert_eq!((&batched.0, &batched.1), (&iterated.0, &iterated.1));
        assert!(batched.2.iter().all(|&n| n == 1));
    }
}
