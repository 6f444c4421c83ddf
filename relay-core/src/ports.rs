//! Relay port allocation over a configured range, one allocator per bind address.

use std::collections::BTreeSet;

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PortError {
    #[error("port range {min}-{max} is empty or has no even base with a following odd port")]
    BadRange { min: u16, max: u16 },
    #[error("no free relay ports left in {min}-{max}")]
    Exhausted { min: u16, max: u16 },
}

/// Hands out even RTP ports (RTCP = RTP + 1 when a pair is asked for) and takes them back.
/// Allocation rotates through the range so a freed port is not reused at once, which keeps late
/// packets of an ended call away from the next one.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct PortAllocator {
    min: u16,
    max: u16,
    next: u16,
    used: BTreeSet<u16>,
}

impl PortAllocator {
    pub fn new(min: u16, max: u16) -> Result<PortAllocator, PortError> {
        let first = min
            .checked_add(min % 2)
            .ok_or(PortError::BadRange { min, max })?;
        if first >= max {
            return Err(PortError::BadRange { min, max });
        }
        Ok(PortAllocator {
            min: first,
            max,
            next: first,
            used: BTreeSet::new(),
        })
    }

    /// An even base port; with `pair` also base + 1.
    pub fn allocate(&mut self, pair: bool) -> Result<u16, PortError> {
        self.allocate_usable(pair, &mut |_| true)
    }

    /// Like [`PortAllocator::allocate`], skipping ports `usable` refuses (another program holds
    /// them); those stay free here and are asked about again next time.
    pub fn allocate_usable(
        &mut self,
        pair: bool,
        usable: &mut dyn FnMut(u16) -> bool,
    ) -> Result<u16, PortError> {
        let slots = (u32::from(self.max) - u32::from(self.min)) / 2 + 1;
        let mut p = self.next;
        for _ in 0..slots {
            let ok = !self.used.contains(&p)
                && (!pair || (p < self.max && !self.used.contains(&(p + 1))))
                && usable(p)
                && (!pair || usable(p + 1));
            let after = match p.checked_add(2) {
                Some(n) if n <= self.max => n,
                _ => self.min,
            };
            if ok {
                self.used.insert(p);
                if pair {
                    self.used.insert(p + 1);
                }
                self.next = after;
                return Ok(p);
            }
            p = after;
        }
        Err(PortError::Exhausted {
            min: self.min,
            max: self.max,
        })
    }

    /// Marks a port taken (a restored call's); false if it lies outside the range.
    pub fn reserve(&mut self, port: u16) -> bool {
        if port < self.min || port > self.max {
            return false;
        }
        self.used.insert(port);
        true
    }

    pub fn is_used(&self, port: u16) -> bool {
        self.used.contains(&port)
    }

    pub fn release(&mut self, port: u16) {
        self.used.remove(&port);
    }

    pub fn in_use(&self) -> usize {
        self.used.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_another_program_holds_are_skipped_and_asked_again() {
        let mut a = PortAllocator::new(30_000, 30_011).unwrap();
        // 30000 is held, and 30003 (so the 30002 pair) too.
        let mut held = |p: u16| p != 30_000 && p != 30_003;
        assert_eq!(a.allocate_usable(true, &mut held), Ok(30_004));
        // A single port only needs the base.
        assert_eq!(a.allocate_usable(false, &mut held), Ok(30_006));
        // The skipped ports were not taken: once free, they are handed out.
        a.next = 30_000;
        assert_eq!(a.allocate_usable(true, &mut |_| true), Ok(30_000));
        assert_eq!(
            a.allocate_usable(true, &mut |_| false),
            Err(PortError::Exhausted {
                min: 30_000,
                max: 30_011
            })
        );
    }

    #[test]
    fn reserve_marks_ports_inside_the_range_only() {
        let mut a = PortAllocator::new(30_000, 30_003).unwrap();
        assert!(a.reserve(30_000) && a.reserve(30_001));
        assert!(!a.reserve(40_000));
        assert_eq!(a.allocate(true), Ok(30_002));
        assert_eq!(a.in_use(), 4);
    }

    #[test]
    fn pairs_are_even_and_exhaustion_is_an_error() {
        let mut a = PortAllocator::new(30001, 30006).unwrap();
        assert_eq!(a.allocate(true), Ok(30002));
        assert_eq!(a.allocate(true), Ok(30004));
        assert_eq!(
            a.allocate(true),
            Err(PortError::Exhausted {
                min: 30002,
                max: 30006
            })
        );
        // A single port still fits at the top of the range.
        assert_eq!(a.allocate(false), Ok(30006));
        assert_eq!(a.in_use(), 5);
        a.release(30002);
        a.release(30003);
        assert_eq!(a.allocate(true), Ok(30002));
        assert_eq!(
            PortAllocator::new(5, 5).err(),
            Some(PortError::BadRange { min: 5, max: 5 })
        );
    }
}
