//! Statistics of a trace, computed in one streaming pass: what `mallard inspect` shows.
//!
//! Live bytes need each live object's size: a [`LiveTable`] of sizes, so memory is in
//! proportion to the peak live set, not to the objects ever created. [`TraceStats::add`]
//! expects a valid trace (one a [`crate::TraceReader`] has checked); given an invalid one it
//! still never panics or grows without bound, it just counts nonsense. [`TraceStats::read`]
//! does the reader's model check itself, against the same table of sizes (the check's table
//! and the statistics' did the same push and remove for every event). The other per-trace
//! state is fixed (the histogram) or one entry per thread.
//!
//! Sizes counted in the histogram and in `bytes_allocated` are the sizes *requested*: each
//! allocation's, and each realloc's new size. The histogram's buckets are powers of two: bucket
//! `k` holds sizes in `(2^(k-1), 2^k]`, bucket 0 the sizes 0 and 1.

use crate::format::EventCounts;
use crate::live::LiveTable;
use crate::model::{Domain, Event, Record};
use crate::validate::{check_live, Check};
use crate::{TraceError, TraceReader};
use serde::{Serialize, Serializer};
use std::collections::HashSet;
use std::fmt;

/// Number of size buckets: `≤ 1`, `≤ 2`, `≤ 4`, ..., `≤ 2^64`.
pub const SIZE_BUCKETS: usize = 65;

/// What `mallard inspect` reports about a trace.
#[derive(Clone, Debug, Serialize)]
pub struct TraceStats {
    pub events: u64,
    /// Events by kind (allocations by kind, frees, reallocs).
    pub counts: EventCounts,
    /// Distinct threads that made at least one call.
    pub threads: u64,
    /// Objects created (allocations and the new side of reallocs) by allocator domain.
    /// Serialized as `{"c": n, "raw": n, "mem": n, "object": n}`.
    #[serde(serialize_with = "serialize_domains")]
    pub domains: [u64; 4],
    /// Requested sizes in power-of-two buckets: `size_histogram[k]` counts sizes in
    /// `(2^(k-1), 2^k]` (bucket 0: sizes 0 and 1). Serialized as the non-empty buckets.
    #[serde(serialize_with = "serialize_histogram")]
    pub size_histogram: Vec<u64>,
    /// Sum of all requested sizes (allocations and realloc new sizes).
    pub bytes_allocated: u64,
    pub peak_live_bytes: u64,
    pub peak_live_objects: u64,
    /// The first event at which `peak_live_bytes` was reached (counting from 0).
    pub peak_live_bytes_event: u64,
    pub live_objects_end: u64,
    pub live_bytes_end: u64,
    /// Whether any event carries a timestamp.
    pub has_timestamps: bool,
    pub first_timestamp_ns: Option<u64>,
    pub last_timestamp_ns: Option<u64>,
    /// Size of each live object.
    #[serde(skip)]
    sizes: LiveTable<u64>,
    #[serde(skip)]
    seen_threads: HashSet<u32>,
    #[serde(skip)]
    last_thread: Option<u32>,
}

impl Default for TraceStats {
    fn default() -> Self {
        TraceStats::new()
    }
}

impl TraceStats {
    pub fn new() -> Self {
        TraceStats {
            events: 0,
            counts: EventCounts::default(),
            threads: 0,
            domains: [0; 4],
            size_histogram: vec![0; SIZE_BUCKETS],
            bytes_allocated: 0,
            peak_live_bytes: 0,
            peak_live_objects: 0,
            peak_live_bytes_event: 0,
            live_objects_end: 0,
            live_bytes_end: 0,
            has_timestamps: false,
            first_timestamp_ns: None,
            last_timestamp_ns: None,
            sizes: LiveTable::new(),
            seen_threads: HashSet::new(),
            last_thread: None,
        }
    }

    /// Counts one record. Inlined into the caller's loop (it is called once an event).
    #[inline]
    pub fn add(&mut self, rec: &Record) {
        let (ended, made) = match rec.event {
            Event::Alloc { id, size, .. } => (None, self.create(id, size)),
            Event::Free { id } => (self.sizes.remove(id), None),
            Event::Realloc { old, new, size } => {
                let ended = self.sizes.remove(old);
                (ended, self.create(new, size))
            }
        };
        self.tally(rec, ended, made);
    }

    /// The statistics of the rest of a trace, with the reader's model check and the
    /// statistics' live sizes in one [`LiveTable`] (each record checked once, one table moved
    /// instead of two): what `mallard inspect` computes. The records, the statistics and any
    /// error are those of [`TraceReader::for_each_batch`] with [`TraceStats::add`]. Completed
    /// ([`TraceStats::finish`]).
    pub fn read(reader: &mut TraceReader) -> Result<TraceStats, TraceError> {
        let mut stats = TraceStats::new();
        match reader.take_validator() {
            Some(_) => reader.for_each_checked(&mut stats)?,
            // Unchecked, or checking already under way: the reader's own check, if any.
            None => reader.for_each_batch(|recs| {
                recs.iter().for_each(|rec| stats.add(rec));
                Ok::<(), TraceError>(())
            })?,
        }
        Ok(stats.finish())
    }

    /// The model check of `rec` against the live sizes (the [`crate::Validator`]'s check, with
    /// its messages), then [`TraceStats::add`]'s counting; on error nothing changes. Inlined into
    /// the reader's batch loop ([`Check`]).
    #[inline(always)]
    fn add_checked(&mut self, rec: &Record) -> Result<(), String> {
        let made = match rec.event {
            Event::Alloc { size, .. } | Event::Realloc { size, .. } => Some(size),
            Event::Free { .. } => None,
        };
        let ended = check_live(&mut self.sizes, rec, made.unwrap_or(0))?;
        if let Some(size) = made {
            self.count_size(size);
        }
        self.tally(rec, ended, made);
        Ok(())
    }

    /// Counts `rec`, whose object of size `ended` (if any) has left the live table and whose
    /// new object of size `made` (if any) has entered it.
    #[inline(always)]
    fn tally(&mut self, rec: &Record, ended: Option<u64>, made: Option<u64>) {
        self.events += 1;
        self.counts.add(&rec.event);
        if self.last_thread != Some(rec.thread) {
            self.last_thread = Some(rec.thread);
            self.seen_threads.insert(rec.thread);
        }
        if let Some(ts) = rec.timestamp_ns {
            self.has_timestamps = true;
            self.first_timestamp_ns.get_or_insert(ts);
            self.last_timestamp_ns = Some(ts);
        }
        if !matches!(rec.event, Event::Free { .. }) {
            self.domains[rec.domain.code() as usize] += 1;
        }
        if let Some(size) = ended {
            self.live_bytes_end = self.live_bytes_end.saturating_sub(size);
            self.live_objects_end = self.live_objects_end.saturating_sub(1);
        }
        if let Some(size) = made {
            self.live_objects_end += 1;
            self.live_bytes_end = self.live_bytes_end.saturating_add(size);
        }
        if self.live_bytes_end > self.peak_live_bytes {
            self.peak_live_bytes = self.live_bytes_end;
            self.peak_live_bytes_event = self.events - 1;
        }
        self.peak_live_objects = self.peak_live_objects.max(self.live_objects_end);
    }

    /// Completes the statistics (call once, after the last `add`).
    pub fn finish(mut self) -> Self {
        self.threads = self.seen_threads.len() as u64;
        self
    }

    /// The bucket of a requested size.
    #[inline]
    pub fn bucket(size: u64) -> usize {
        if size <= 1 {
            0
        } else {
            (64 - (size - 1).leading_zeros()) as usize
        }
    }

    /// The largest size in bucket `k` (`2^k`, saturating at `u64::MAX`).
    pub fn bucket_max(k: usize) -> u64 {
        if k >= 64 {
            u64::MAX
        } else {
            1 << k
        }
    }

    /// Counts a requested size (in the histogram and the total).
    #[inline(always)]
    fn count_size(&mut self, size: u64) {
        self.size_histogram[Self::bucket(size)] += 1;
        self.bytes_allocated = self.bytes_allocated.saturating_add(size);
    }

    /// Counts a new object's size and enters it in the live table; its size if it entered.
    #[inline]
    fn create(&mut self, id: u64, size: u64) -> Option<u64> {
        self.count_size(size);
        // A valid trace has id == next_id; anything else is ignored rather than allowed to
        // grow the table.
        if id != self.sizes.next_id() {
            return None;
        }
        self.sizes.push(size);
        Some(size)
    }
}

impl Check for TraceStats {
    #[inline(always)]
    fn check_record(&mut self, rec: &Record) -> Result<(), String> {
        self.add_checked(rec)
    }
}

fn serialize_histogram<S: Serializer>(h: &[u64], s: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Bucket {
        /// Sizes in this bucket are at most this (and more than half of it).
        max_size: u64,
        count: u64,
    }
    s.collect_seq(
        h.iter()
            .enumerate()
            .filter(|(_, &c)| c > 0)
            .map(|(k, &count)| Bucket { max_size: TraceStats::bucket_max(k), count }),
    )
}

fn serialize_domains<S: Serializer>(d: &[u64; 4], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(
        Domain::ALL
            .iter()
            .map(|dom| (dom.name(), d[dom.code() as usize])),
    )
}

/// `1234567` as `1,234,567` (the one separator, [`mallard_io::text::thousands`]).
pub use mallard_io::text::thousands;

/// Bytes in binary units: `512 B`, `1.5 KiB`, `12.0 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// A power-of-two size as a short label: `16 B`, `4 KiB`, `2 MiB`.
fn size_label(k: usize) -> String {
    if k >= 64 {
        return "16 EiB".into();
    }
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    format!("{} {}", 1u64 << (k % 10), units[k / 10])
}

impl fmt::Display for TraceStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.counts;
        let pct = |n: u64| {
            if self.events == 0 {
                0.0
            } else {
                100.0 * n as f64 / self.events as f64
            }
        };
        writeln!(f, "events       {:>14}", thousands(self.events))?;
        for (name, n) in [
            ("malloc", c.malloc),
            ("calloc", c.calloc),
            ("aligned", c.aligned),
            ("realloc", c.reallocs),
            ("free", c.frees),
        ] {
            writeln!(f, "  {name:<10} {:>14}  {:5.1}%", thousands(n), pct(n))?;
        }
        writeln!(f, "threads      {:>14}", thousands(self.threads))?;
        writeln!(f, "objects      {:>14}  created", thousands(c.objects()))?;
        let objects = c.objects();
        for d in Domain::ALL {
            let n = self.domains[d.code() as usize];
            // Every domain with objects, and `c` always (so a trace of plain mallocs says so).
            if n > 0 || d == Domain::C {
                let share = if objects == 0 {
                    0.0
                } else {
                    100.0 * n as f64 / objects as f64
                };
                writeln!(
                    f,
                    "  {:<10} {:>14}  {share:5.1}%  domain",
                    d.name(),
                    thousands(n)
                )?;
            }
        }
        writeln!(
            f,
            "bytes        {:>14}  requested in total",
            human_bytes(self.bytes_allocated)
        )?;
        writeln!(
            f,
            "peak live    {:>14}  objects, {} (at event {})",
            thousands(self.peak_live_objects),
            human_bytes(self.peak_live_bytes),
            thousands(self.peak_live_bytes_event)
        )?;
        writeln!(
            f,
            "live at end  {:>14}  objects, {}",
            thousands(self.live_objects_end),
            human_bytes(self.live_bytes_end)
        )?;
        match (self.first_timestamp_ns, self.last_timestamp_ns) {
            (Some(a), Some(b)) => writeln!(
                f,
                "timestamps   {:>14}  ns from first to last",
                thousands(b.saturating_sub(a))
            )?,
            _ => writeln!(f, "timestamps             none")?,
        }
        let used: Vec<usize> = (0..SIZE_BUCKETS)
            .filter(|&k| self.size_histogram[k] > 0)
            .collect();
        if let (Some(&lo), Some(&hi)) = (used.first(), used.last()) {
            writeln!(f, "requested sizes (power-of-two buckets)")?;
            let max = self
                .size_histogram
                .iter()
                .copied()
                .max()
                .unwrap_or(1)
                .max(1);
            for k in lo..=hi {
                let n = self.size_histogram[k];
                // Bars of up to 40 characters; any non-empty bucket gets at least one.
                let bar = ((n as u128 * 40).div_ceil(max as u128)) as usize;
                writeln!(
                    f,
                    "  ≤ {:>7} {:>14}  {}",
                    size_label(k),
                    thousands(n),
                    "#".repeat(bar)
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AllocKind;

    fn alloc(id: u64, size: u64) -> Event {
        Event::Alloc { id, size, align: 0, kind: AllocKind::Malloc }
    }

    #[test]
    fn exact_on_a_hand_made_trace() {
        // live bytes after each event, by hand:
        //  a0 100      -> 100   (1 object)
        //  a1 50       -> 150   (2)
        //  f0          -> 50    (1)
        //  a2 3000     -> 3050  (2)
        //  r2->3 10    -> 60    (2)
        //  a4 16 calloc-> 76    (3)   <- peak objects 3
        //  a5 4096 aligned -> 4172 (4) <- peak objects 4, peak bytes 4172 at event 6
        //  f5          -> 76    (3)
        //  f1          -> 26    (2)
        let events = [
            Record::on(0, alloc(0, 100)),
            Record::on(0, alloc(1, 50)),
            Record::on(1, Event::Free { id: 0 }),
            Record::on(1, alloc(2, 3000)),
            Record::on(0, Event::Realloc { old: 2, new: 3, size: 10 }),
            Record::on(
                2,
                Event::Alloc { id: 4, size: 16, align: 0, kind: AllocKind::Calloc },
            ),
            Record {
                thread: 2,
                timestamp_ns: Some(7),
                domain: crate::model::Domain::C,
                event: Event::Alloc {
                    id: 5,
                    size: 4096,
                    align: 64,
                    kind: AllocKind::Aligned,
                },
            },
            Record {
                thread: 0,
                timestamp_ns: Some(9),
                domain: crate::model::Domain::C,
                event: Event::Free { id: 5 },
            },
            Record::on(0, Event::Free { id: 1 }),
        ];
        let mut s = TraceStats::new();
        for e in &events {
            s.add(e);
        }
        let s = s.finish();
        assert_eq!(s.events, 9);
        assert_eq!(
            s.counts,
            EventCounts {
                malloc: 3,
                calloc: 1,
                aligned: 1,
                frees: 3,
                reallocs: 1
            }
        );
        assert_eq!(s.threads, 3);
        assert_eq!(s.bytes_allocated, 100 + 50 + 3000 + 10 + 16 + 4096);
        assert_eq!(s.peak_live_bytes, 4172);
        assert_eq!(s.peak_live_bytes_event, 6);
        assert_eq!(s.peak_live_objects, 4);
        assert_eq!((s.live_objects_end, s.live_bytes_end), (2, 26));
        assert!(s.has_timestamps);
        assert_eq!(
            (s.first_timestamp_ns, s.last_timestamp_ns),
            (Some(7), Some(9))
        );
        // 10, 16 | 50 | 100 | 3000 | 4096
        let mut h = vec![0u64; SIZE_BUCKETS];
        h[4] = 2; // (8, 16]: 10 and 16
        h[6] = 1; // (32, 64]: 50
        h[7] = 1; // (64, 128]: 100
        h[12] = 2; // (2048, 4096]: 3000 and 4096
        assert_eq!(s.size_histogram, h);
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["size_histogram"][0]["max_size"], 16);
        assert_eq!(json["size_histogram"][0]["count"], 2);
        assert_eq!(json["counts"]["frees"], 3);
        let text = s.to_string();
        assert!(
            text.contains("peak live                 4  objects, 4.1 KiB (at event 6)"),
            "{text}"
        );
        assert!(
            text.contains("≤   4 KiB              2  ########################################"),
            "{text}"
        );
    }

    #[test]
    fn buckets_are_powers_of_two() {
        let cases =
            [(0, 0), (1, 0), (2, 1), (3, 2), (4, 2), (5, 3), (16, 4), (17, 5), (1 << 20, 20)];
        for (size, bucket) in cases {
            assert_eq!(TraceStats::bucket(size), bucket, "size {size}");
        }
        assert_eq!(TraceStats::bucket(u64::MAX), 64);
        assert_eq!(TraceStats::bucket((1 << 63) + 1), 64);
        assert_eq!(size_label(12), "4 KiB");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(999), "999");
    }

    #[test]
    fn invalid_input_neither_panics_nor_grows() {
        let mut s = TraceStats::new();
        s.add(&Record::on(u32::MAX, alloc(1 << 60, u64::MAX)));
        s.add(&Record::on(0, Event::Free { id: 1 << 62 }));
        s.add(&Record::on(0, Event::Free { id: 0 }));
        assert_eq!(s.sizes.next_id(), 0);
        let s = s.finish();
        assert_eq!(s.threads, 2);
        let _ = s.to_string();
    }

    #[test]
    fn counts_objects_by_domain() {
        let mut s = TraceStats::new();
        let in_domain = |domain, event| Record { domain, ..Record::on(0, event) };
        s.add(&Record::on(0, alloc(0, 8)));
        s.add(&in_domain(Domain::Object, alloc(1, 16)));
        s.add(&in_domain(Domain::Object, alloc(2, 32)));
        s.add(&in_domain(
            Domain::Mem,
            Event::Realloc { old: 1, new: 3, size: 600 },
        ));
        s.add(&in_domain(Domain::Raw, alloc(4, 1024)));
        s.add(&in_domain(Domain::Object, Event::Free { id: 2 }));
        let s = s.finish();
        assert_eq!(s.domains, [1, 1, 1, 2]);
        let text = s.to_string();
        assert!(
            text.contains("  c                       1   20.0%  domain"),
            "{text}"
        );
        assert!(
            text.contains("  object                  2   40.0%  domain"),
            "{text}"
        );
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(
            json["domains"],
            serde_json::json!({"c": 1, "raw": 1, "mem": 1, "object": 2})
        );
        // A trace of plain mallocs shows its `c` line only.
        let mut plain = TraceStats::new();
        plain.add(&Record::on(0, alloc(0, 8)));
        let text = plain.finish().to_string();
        assert!(
            text.contains("  c                       1  100.0%  domain"),
            "{text}"
        );
        assert!(!text.contains("  object "), "{text}");
    }

    /// Statistics (JSON and text) or the error, for a trace read a batch at a time with the
    /// reader's check and [`TraceStats::add`], and through [`TraceStats::read`].
    fn both_ways(bytes: &[u8]) -> [Result<(serde_json::Value, String), String>; 2] {
        let open = || TraceReader::from_bytes(std::path::Path::new("t.mtr"), bytes.to_vec());
        let shown = |s: TraceStats| (serde_json::to_value(&s).unwrap(), s.to_string());
        let mut s = TraceStats::new();
        let two_tables = open()
            .unwrap()
            .for_each_batch(|recs| {
                recs.iter().for_each(|r| s.add(r));
                Ok::<(), TraceError>(())
            })
            .map(|()| shown(s.finish()))
            .map_err(|e| e.to_string());
        let mut reader = open().unwrap();
        let one_table = TraceStats::read(&mut reader)
            .map(shown)
            .map_err(|e| e.to_string());
        assert!(reader.next().is_none(), "the iterator does not resume");
        [two_tables, one_table]
    }

    #[test]
    fn one_table_reads_as_two_valid_or_not() {
        use crate::validate::tests::written;
        use crate::Form;
        for (generator, threads) in [("python-objects", 1), ("larson", 4), ("uniform", 2)] {
            let params = crate::gen::GenParams { events: 20_000, seed: 3, threads };
            let mut recs = Vec::new();
            crate::gen::generate(generator, &params, &mut |r| {
                recs.push(r);
                Ok(())
            })
            .unwrap();
            for form in [Form::Binary, Form::Csv] {
                let [two, one] = both_ways(&written(&recs, form));
                assert!(two.is_ok(), "{generator}: {two:?}");
                assert_eq!(one, two, "{generator} {form:?}");
            }
        }
        // 300 objects (the fault comes in the decoder's third batch), then each fault in turn.
        let start: Vec<Record> = (0..300)
            .map(|id| Record::on(0, alloc(id, id * 8)))
            .collect();
        let realloc = |old, new| Event::Realloc { old, new, size: 7 };
        let aligned = Event::Alloc {
            id: 300,
            size: 64,
            align: 24,
            kind: AllocKind::Aligned,
        };
        // With whether the binary form can store it (its ids are implicit, and its references
        // only to objects that exist).
        let faults = [
            (vec![Event::Free { id: 5 }, Event::Free { id: 5 }], true),
            (vec![Event::Free { id: 9 }, realloc(9, 300)], true),
            (vec![Event::Free { id: 300 }], false),
            (vec![alloc(301, 1)], false),
            (vec![Event::Free { id: 9 }, realloc(9, 302)], false),
            (vec![realloc(9, 302)], false),
            (vec![realloc(400, 300)], false),
            (vec![aligned], false),
        ];
        for (fault, binary) in faults {
            let mut recs = start.clone();
            recs.extend(fault.iter().map(|&e| Record::on(0, e)));
            for form in [Form::Binary, Form::Csv] {
                if form == Form::Binary && !binary {
                    continue;
                }
                let [two, one] = both_ways(&written(&recs, form));
                assert!(two.is_err(), "{fault:?} {form:?}");
                assert_eq!(one, two, "{fault:?} {form:?}");
            }
        }
    }
}
