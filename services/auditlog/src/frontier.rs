//! The right edge of the tree: the roots of its complete subtrees, which are
//! the only hashes `tlog_tiles` needs to add a record or compute the root.

use tlog_tiles::{Hash, HashReader};

/// The roots of the complete subtrees on the right edge of a tree of
/// `size` records, left to right: one per set bit of `size`, so at most 64.
#[derive(Clone, Debug, Default)]
pub(crate) struct Frontier {
    /// `(stored hash index, hash)`, left to right.
    nodes: Vec<(u64, Hash)>,
}

/// The frontier of the empty tree.
pub(crate) static EMPTY: Frontier = Frontier { nodes: Vec::new() };

impl HashReader for Frontier {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        indexes
            .iter()
            .map(|&index| self.get(index).ok_or(tlog_tiles::Error::IndexesNotInTree))
            .collect()
    }
}

impl Frontier {
    /// The stored hash indexes of the frontier of a tree of `size` records,
    /// left to right.
    pub(crate) fn indexes(size: u64) -> Vec<u64> {
        let mut indexes = Vec::new();
        let mut start = 0u64;
        for level in (0..64u8).rev() {
            if size & (1u64 << level) != 0 {
                indexes.push(tlog_tiles::stored_hash_index(level, start >> level));
                start += 1u64 << level;
            }
        }
        indexes
    }

    /// The frontier of a tree of `size` records, read from `reader`.
    pub(crate) fn read(size: u64, reader: &impl HashReader) -> Result<Frontier, tlog_tiles::Error> {
        let indexes = Self::indexes(size);
        let hashes = reader.read_hashes(&indexes)?;
        Ok(Frontier {
            nodes: indexes.into_iter().zip(hashes).collect(),
        })
    }

    /// The hash at stored hash `index`, if it is on the frontier.
    pub(crate) fn get(&self, index: u64) -> Option<Hash> {
        self.nodes
            .iter()
            .find(|(i, _)| *i == index)
            .map(|(_, h)| *h)
    }

    /// Records the hashes `stored_hashes(n, ..)` returned for record `n`: the
    /// leaf, then one per subtree it completes, each merging one frontier node.
    pub(crate) fn push(&mut self, n: u64, hashes: &[Hash]) {
        let merged = hashes.len() - 1;
        self.nodes.truncate(self.nodes.len() - merged);
        let level = u8::try_from(merged).expect("a record completes at most 64 subtrees");
        self.nodes.push((
            tlog_tiles::stored_hash_index(level, n >> level),
            hashes[merged],
        ));
    }

    /// The root of the tree this frontier is the right edge of.
    pub(crate) fn root(&self, size: u64) -> Result<Hash, tlog_tiles::Error> {
        tlog_tiles::tree_hash(size, self)
    }
}
