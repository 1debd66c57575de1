//! The bind groups of each kernel family: one struct per family whose fields, in binding
//! order, name what each buffer is; the family's layout is derived from the same list.

use super::{Family, StepUniform};

/// Binding kinds of a bind group layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// A plain uniform buffer.
    Uniform,
    /// The per-step uniform (`struct Step`, binding 1 of every family): bound with a dynamic
    /// offset, so that several steps, each with its own slot, go into one submit.
    Step,
    /// A read-only storage buffer.
    Read,
    /// A read-write storage buffer.
    ReadWrite,
}

impl Slot {
    /// The layout entry of this slot kind at `binding` (compute stage, whole buffers).
    pub(crate) fn layout_entry(self, binding: u32) -> wgpu::BindGroupLayoutEntry {
        let ty = match self {
            Slot::Uniform | Slot::Step => wgpu::BufferBindingType::Uniform,
            Slot::Read | Slot::ReadWrite => wgpu::BufferBindingType::Storage {
                read_only: matches!(self, Slot::Read),
            },
        };
        wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty,
                has_dynamic_offset: matches!(self, Slot::Step),
                min_binding_size: None,
            },
            count: None,
        }
    }
}

/// Bytes of one `StepUniform` slot as bound (the slots themselves are spaced by the device's
/// uniform offset alignment).
pub const STEP_UNIFORM_SIZE: u64 = std::mem::size_of::<StepUniform>() as u64;

/// The binding of the step uniform `buf`: one slot, chosen per dispatch by a dynamic offset.
pub fn step_binding(buf: &wgpu::Buffer) -> wgpu::BindingResource<'_> {
    wgpu::BindingResource::Buffer(wgpu::BufferBinding {
        buffer: buf,
        offset: 0,
        size: std::num::NonZeroU64::new(STEP_UNIFORM_SIZE),
    })
}

/// One kernel family's bind group: named buffers whose order is the shader's `@binding`s.
/// The family's layout ([`Kernels::new`](super::Kernels::new)) and every bind group come from
/// the same list, so a caller never builds a positional array.
pub trait FamilyBindings {
    /// The slot kinds of the struct's own bindings, binding `i` at index `i`.
    const SLOTS: &'static [Slot];
    /// Each buffer with its binding and slot kind, as bound for `family` (the GEMM family adds
    /// its aliases).
    fn entries(&self, family: Family) -> Vec<(u32, &wgpu::Buffer, Slot)>;
}

/// Declares a bindings struct: one `&wgpu::Buffer` field per binding, in binding order, with
/// its slot kind; generates the struct, its `SLOTS` and its own entries (`own_entries`).
macro_rules! family_bindings {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $($(#[$fmeta:meta])* $field:ident: $slot:ident,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy)]
        pub struct $name<'a> {
            $($(#[$fmeta])* pub $field: &'a wgpu::Buffer,)+
        }

        impl<'a> $name<'a> {
            /// The slot kinds, binding `i` at index `i`.
            const OWN_SLOTS: &'static [Slot] = &[$(Slot::$slot),+];

            /// Each field with its binding and slot kind, in binding order.
            fn own_entries(&self) -> Vec<(u32, &'a wgpu::Buffer, Slot)> {
                [$(self.$field),+]
                    .into_iter()
                    .zip(Self::OWN_SLOTS)
                    .enumerate()
                    .map(|(i, (b, s))| (i as u32, b, *s))
                    .collect()
            }
        }
    };
}

family_bindings! {
    /// The bindings of shaders/matmul.wgsl (families [`Family::Matmul`] and
    /// [`Family::MatmulGemm`]). Forward: `out = a`, `aux = φ(a)`; delta: `out = δ_prev`, `aux`
    /// holds `a_prev`; grad: `out` is the gradient (or split-K partials), `aux` the parameters
    /// the fused epilogue updates.
    pub struct MatmulBindings {
        /// 0: [`MatmulDims`](super::MatmulDims).
        dims: Uniform,
        /// 1: the step uniform ([`StepUniform`]), one slot per dispatch.
        step: Step,
        /// 2: A. Forward: x or z_{l-1} `[B, in]`; delta: δ_l `[B, out]`; grad: the layer's
        /// input `[B, in]`; split-K reduction: the partials `[slices, in + 1, out]`.
        lhs: Read,
        /// 3: B. Forward and delta: the parameters (W at `b_off`); grad: δ_l `[B, out]`.
        rhs: Read,
        /// 4: C. Forward: a `[B, out]`; delta: δ_{l-1} `[B, in]`; grad: the gradient
        /// `[params]` (at `c_off`) or the split-K partials.
        out: ReadWrite,
        /// 5 (`out2`): forward: z = φ(a) `[B, out]`; delta: a_{l-1} `[B, in]`; grad: the
        /// parameters `[params]`.
        aux: ReadWrite,
        /// 6: the optimizer's first state `[params]` (or a 1-float placeholder).
        opt_m: ReadWrite,
        /// 7: the optimizer's second state `[params]` (or a 1-float placeholder).
        opt_v: ReadWrite,
    }
}

family_bindings! {
    /// The bindings of shaders/loss.wgsl.
    pub struct LossBindings {
        /// 0: [`LossDims`](super::LossDims).
        dims: Uniform,
        /// 1: the step uniform ([`StepUniform`]).
        step: Step,
        /// 2: the output layer's pre-activations a `[B, out]`.
        pre: Read,
        /// 3: the targets t `[B, out]`.
        targets: Read,
        /// 4: the output delta δ = ∂E/∂a `[B, out]` (`softmax_rows`: the probabilities).
        delta: ReadWrite,
        /// 5: per-row loss and correctness `[B, 2]`.
        row_stats: ReadWrite,
        /// 6: per-step loss and correct count `[steps, 2]`.
        stats: ReadWrite,
    }
}

family_bindings! {
    /// The bindings of shaders/optimizer.wgsl. `update`: `params -= f(grads)`; `accumulate`:
    /// `params += grads` (the micro-batch total in `params`); `weight_decay`: `params += λ·grads`
    /// (the model's parameters in `grads`, the gradient in `params`).
    pub struct OptimizerBindings {
        /// 0: [`OneU32`](super::OneU32) (a count) or [`Range`](super::Range).
        count: Uniform,
        /// 1: the step uniform ([`StepUniform`]).
        step: Step,
        /// 2: the values read `[params]`.
        grads: Read,
        /// 3: the values written `[params]`.
        params: ReadWrite,
        /// 4: the optimizer's first state `[params]` (or a 1-float placeholder).
        opt_m: ReadWrite,
        /// 5: the optimizer's second state `[params]` (or a 1-float placeholder).
        opt_v: ReadWrite,
    }
}

family_bindings! {
    /// The bindings of shaders/data.wgsl: `dst[i] = src[order[row_start + i]]`, row by row.
    pub struct DataBindings {
        /// 0: [`OneU32`](super::OneU32), the row width.
        gather: Uniform,
        /// 1: the step uniform ([`StepUniform`]).
        step: Step,
        /// 2: the epoch's row order `[rows]` (u32).
        order: Read,
        /// 3: the rows on the device `[rows, width]`.
        src: Read,
        /// 4: the batch buffer `[B, width]`.
        dst: ReadWrite,
    }
}

/// The GEMM's aliases: lhs (2) and rhs (3) again as vec4 arrays, bindings 8 and 9.
const GEMM_ALIAS_SLOTS: &[Slot] = &[Slot::Read, Slot::Read];

impl FamilyBindings for MatmulBindings<'_> {
    const SLOTS: &'static [Slot] = Self::OWN_SLOTS;

    fn entries(&self, family: Family) -> Vec<(u32, &wgpu::Buffer, Slot)> {
        let mut e = self.own_entries();
        if family == Family::MatmulGemm {
            let own = Self::OWN_SLOTS.len() as u32;
            e.push((own, self.lhs, GEMM_ALIAS_SLOTS[0]));
            e.push((own + 1, self.rhs, GEMM_ALIAS_SLOTS[1]));
        }
        e
    }
}

/// The families with no aliases: their entries are their fields.
macro_rules! plain_family_bindings {
    ($($name:ident),+) => {$(
        impl FamilyBindings for $name<'_> {
            const SLOTS: &'static [Slot] = Self::OWN_SLOTS;

            fn entries(&self, _family: Family) -> Vec<(u32, &wgpu::Buffer, Slot)> {
                self.own_entries()
            }
        }
    )+};
}
plain_family_bindings!(LossBindings, OptimizerBindings, DataBindings);

/// The bind group layout of a family (the same for all its entry points), binding `i` at index
/// `i`: its bindings struct's [`FamilyBindings::SLOTS`], with the GEMM's aliases.
pub fn family_slots(f: Family) -> Vec<Slot> {
    match f {
        Family::Matmul => MatmulBindings::SLOTS.to_vec(),
        Family::MatmulGemm => [MatmulBindings::SLOTS, GEMM_ALIAS_SLOTS].concat(),
        Family::Loss => LossBindings::SLOTS.to_vec(),
        Family::Optimizer => OptimizerBindings::SLOTS.to_vec(),
        Family::Data => DataBindings::SLOTS.to_vec(),
    }
}
