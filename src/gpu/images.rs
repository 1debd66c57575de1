//! Operand images for the image matmul (`MatmulVariant::Image`, CPU adapters with 8-lane
//! subgroups): each matmul operand that a layer's kernels read is mirrored once per step into an
//! rgba32float storage image, texel (c, r) = row r, columns 4c..4c+3. On lavapipe an image load
//! gathers the 8 lanes' texels with vector instructions, where a storage-buffer load is a
//! per-lane scalar loop; the kernels are otherwise the subgroup kernels, bit for bit.

use super::kernels::{
    groups_1d, Family, Kernels, MatmulConfig, MatmulMode, MirrorDims, IMAGE_FORMAT,
};
use super::{Dispatch, GpuContext, Grid};
use crate::model::LayerLayout;
use wgpu::util::DeviceExt;

/// A row-major matrix `[rows, cols]` in a buffer, to be mirrored.
pub(super) struct Operand<'a> {
    pub label: String,
    pub buffer: &'a wgpu::Buffer,
    /// Where the matrix starts in `buffer`, in f32 (a multiple of 4).
    pub offset: usize,
    /// Rows the image holds; with `batch_rows`, the copy takes the step's batch rows of them.
    pub rows: usize,
    /// A multiple of 4.
    pub cols: usize,
    pub batch_rows: bool,
}

/// An operand's image.
pub(super) struct Mirror {
    pub view: wgpu::TextureView,
    pub bytes: u64,
    _texture: wgpu::Texture,
}

/// Whether a `[rows, cols]` operand fits one image on this device.
pub(super) fn fits(ctx: &GpuContext, rows: usize, cols: usize) -> bool {
    let max = ctx.limits.max_texture_dimension_2d as usize;
    cols.is_multiple_of(4) && rows >= 1 && rows <= max && cols / 4 >= 1 && cols / 4 <= max
}

/// The image mirroring `op` and the dispatch that refreshes it (image.wgsl's `to_image`; an
/// `Option` for the caller to take into its schedule).
pub(super) fn mirror(
    ctx: &GpuContext,
    kernels: &Kernels,
    step_uniform: &wgpu::Buffer,
    op: Operand<'_>,
) -> (Mirror, Option<Dispatch>) {
    let device = &ctx.device;
    let cols4 = (op.cols / 4) as u32;
    let texture = device.create_texture(&wgpu::TextureDescriptor {
        label: Some(&op.label),
        size: wgpu::Extent3d {
            width: cols4,
            height: op.rows as u32,
            depth_or_array_layers: 1,
        },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D2,
        format: IMAGE_FORMAT,
        usage: wgpu::TextureUsages::STORAGE_BINDING,
        view_formats: &[],
    });
    let view = texture.create_view(&wgpu::TextureViewDescriptor::default());
    let dims = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("mirror dims"),
        contents: bytemuck::bytes_of(&MirrorDims {
            cols4,
            rows: op.rows as u32,
            offset4: (op.offset / 4) as u32,
            batch_rows: op.batch_rows as u32,
        }),
        usage: wgpu::BufferUsages::UNIFORM,
    });
    let grid = if op.batch_rows {
        Grid::PerRow { per_row: cols4 }
    } else {
        let (x, y) = groups_1d(
            op.rows as u64 * cols4 as u64,
            ctx.limits.max_compute_workgroups_per_dimension,
        );
        Grid::Fixed(x, y)
    };
    let copy = Dispatch {
        label: format!("mirror {} [{},{}]", op.label, op.rows, op.cols),
        pipeline: kernels.pipeline(device, Family::Image, "to_image", &[]),
        bind_group: kernels.bind_group_with_images(
            device,
            Family::Image,
            &[&dims, step_uniform, op.buffer, op.buffer],
            &[&view],
        ),
        grid,
    };
    let image = Mirror {
        view,
        bytes: op.rows as u64 * cols4 as u64 * 16,
        _texture: texture,
    };
    (image, Some(copy))
}

/// Which of a step's matmuls read their operands from images, and so which operands are
/// mirrored: a kernel does where the adapter runs the image kernels, the subgroup kernel was
/// chosen for its shape and both of its operands fit an image. Indexed by layer.
pub(super) struct ImagePlan {
    /// Forward l: input_l · [W_l; b_l].
    pub forward: Vec<bool>,
    /// Delta l (l ≥ 1): δ_l · W_lᵀ, making δ_{l-1}.
    pub backprop: Vec<bool>,
    /// Gradient l: [input_l, 1]ᵀ · δ_l.
    pub grad: Vec<bool>,
    /// Mirrored: layer l's input (x or z_{l-1}), δ_l, [W_l; b_l].
    pub input: Vec<bool>,
    pub delta: Vec<bool>,
    pub weights: Vec<bool>,
}

impl ImagePlan {
    /// `cfg(l, mode)`: the launch shape layer l's `mode` matmul would have with buffer operands.
    pub fn new(
        ctx: &GpuContext,
        kernels: &Kernels,
        layout: &[LayerLayout],
        rows: usize,
        cfg: impl Fn(usize, MatmulMode) -> MatmulConfig,
    ) -> Self {
        let images = |l: usize, mode: MatmulMode| {
            let c = cfg(l, mode);
            kernels.with_image_operands(c) != c
        };
        let act = |cols: usize| fits(ctx, rows, cols);
        let weights = |l: &LayerLayout| fits(ctx, l.inputs + 1, l.outputs);
        let forward: Vec<bool> = layout
            .iter()
            .enumerate()
            .map(|(l, lay)| images(l, MatmulMode::Forward) && act(lay.inputs) && weights(lay))
            .collect();
        let backprop: Vec<bool> = layout
            .iter()
            .enumerate()
            .map(|(l, lay)| {
                l > 0 && images(l, MatmulMode::Delta) && act(lay.outputs) && weights(lay)
            })
            .collect();
        let grad: Vec<bool> = layout
            .iter()
            .enumerate()
            .map(|(l, lay)| images(l, MatmulMode::Grad) && act(lay.inputs) && act(lay.outputs))
            .collect();
        let either = |a: &[bool], b: &[bool]| a.iter().zip(b).map(|(x, y)| *x || *y).collect();
        ImagePlan {
            input: either(&forward, &grad),
            delta: either(&grad, &backprop),
            weights: either(&forward, &backprop),
            forward,
            backprop,
            grad,
        }
    }
}

/// The dispatch that gathers the step's rows of `data` (`[rows, cols]`, a device-resident
/// dataset) by `order` straight into the input image `view` (image.wgsl's `gather_to_image`).
pub(super) fn gather_to_image(
    ctx: &GpuContext,
    kernels: &Kernels,
    step_uniform: &wgpu::Buffer,
    data: &wgpu::Buffer,
    order: &wgpu::Buffer,
    cols: usize,
    view: &wgpu::TextureView,
) -> Dispatch {
    let device = &ctx.device;
    let cols4 = (cols / 4) as u32;
    let dims = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("gather dims"),
        contents: bytemuck::bytes_of(&MirrorDims {
            cols4,
            rows: 0,
            offset4: 0,
            batch_rows: 1,
        }),
        usage: wgpu::BufferUsages::UNIFORM,
    });
    Dispatch {
        label: format!("gather rows [B,{cols}] into the x image"),
        pipeline: kernels.pipeline(device, Family::Image, "gather_to_image", &[]),
        bind_group: kernels.bind_group_with_images(
            device,
            Family::Image,
            &[&dims, step_uniform, data, order],
            &[view],
        ),
        grid: Grid::PerRow { per_row: cols4 },
    }
}
