//! The fused step's launch shape: batch tile, W slab and workgroup size within an adapter's
//! workgroup memory and invocation limits.

use super::MAX_WIDTH;
use crate::model::{Activation, ModelSpec};

/// The largest batch tile, whatever the workgroup memory allows.
const MAX_TILE: usize = 128;
/// Invocations per workgroup of the tile pass: at most, and at least.
const MAX_WG: u32 = 256;
const MIN_WG: u32 = 64;
const F32: usize = 4;
const VEC4_BYTES: usize = 16;

/// The launch shape the fused step picked for a model on an adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FusedShape {
    /// Batch rows per tile (a multiple of 4).
    pub tile: usize,
    /// Row stride of the workgroup tiles: the widest layer rounded up to 4.
    pub stride: usize,
    /// Rows (forward) or columns (delta) of a weight matrix staged in workgroup memory at once.
    pub w_slab: usize,
    /// vec4s per staged row of W: `stride / 4` rounded up to a multiple of 8 (the swizzle's span).
    pub w_row: usize,
    /// Invocations per workgroup of the tile pass.
    pub workgroup: u32,
    /// Most workgroups of the tile pass (partial-gradient slices).
    pub groups: usize,
    /// Workgroup memory of the tile pass in bytes: two `[tile, stride]` f32 tiles and the
    /// `[w_slab, w_row]` vec4 slab of W.
    pub workgroup_bytes: usize,
}

impl FusedShape {
    /// The launch shape for `spec` within `workgroup_limit` bytes of workgroup memory, or `None`
    /// when `spec` is not eligible (a width above [`MAX_WIDTH`], a step activation) or not even a
    /// 4-row tile fits. The W slab takes the largest of 32, 16, 8 or 4 rows within a quarter of
    /// the memory; the tiles take the rest.
    pub fn choose(
        spec: &ModelSpec,
        workgroup_limit: u32,
        max_invocations: u32,
        max_batch: usize,
        max_groups: usize,
    ) -> Option<FusedShape> {
        if spec.validate().is_err()
            || spec.activations.contains(&Activation::Step)
            || spec.sizes.iter().any(|&s| s > MAX_WIDTH)
        {
            return None;
        }
        let limit = workgroup_limit as usize;
        let stride = spec.sizes.iter().copied().max()?.next_multiple_of(4);
        let w_row = (stride / 4).next_multiple_of(8);
        let slab_bytes = |rows: usize| rows * w_row * VEC4_BYTES;
        let w_slab = [32, 16, 8, 4]
            .into_iter()
            .find(|&rows| slab_bytes(rows) <= limit / 4)?;
        let tile = (limit - slab_bytes(w_slab)) / (2 * stride * F32) / 4 * 4;
        FusedShape {
            tile: 0,
            stride,
            w_slab,
            w_row,
            workgroup: 0,
            groups: 0,
            workgroup_bytes: 0,
        }
        .with_tile(tile, max_invocations, max_batch, max_groups)
    }

    /// This shape with `tile` rows per tile (at most [`MAX_TILE`]): the workgroup size, the
    /// groups for `max_batch` rows and the workgroup memory follow; at most one row per
    /// invocation. `None` below 4 rows.
    pub fn with_tile(
        self,
        tile: usize,
        max_invocations: u32,
        max_batch: usize,
        max_groups: usize,
    ) -> Option<FusedShape> {
        let tile = tile.min(MAX_TILE).min(max_invocations as usize) / 4 * 4;
        if tile < 4 {
            return None;
        }
        let workgroup = ((tile * self.stride / 16) as u32)
            .clamp(MIN_WG, MAX_WG)
            .max(tile as u32)
            .min(max_invocations);
        if (workgroup as usize) < tile {
            return None;
        }
        Some(FusedShape {
            tile,
            workgroup,
            groups: max_batch.max(1).div_ceil(tile).clamp(1, max_groups.max(1)),
            workgroup_bytes: 2 * tile * self.stride * F32 + self.w_slab * self.w_row * VEC4_BYTES,
            ..self
        })
    }

    /// Workgroups of the tile pass for a batch of `batch` rows (the shader computes the same).
    pub fn groups_for(&self, batch: usize) -> u32 {
        batch.div_ceil(self.tile).clamp(1, self.groups) as u32
    }
}
