//! Arithmetic in the BLS12-381 scalar field and in G2, through blst's audited C
//! functions. This and [`crate::hashed`] are the only `unsafe` in the workspace: each call passes pointers to
//! properly initialised, live values of the types the C signature names.
#![allow(unsafe_code)]

use crate::{
    CryptoError,
    bls::{PUBLIC_KEY_BYTES, SIGNATURE_BYTES},
};
use blst::{
    BLST_ERROR, blst_bendian_from_scalar, blst_fr, blst_fr_add, blst_fr_from_scalar,
    blst_fr_from_uint64, blst_fr_inverse, blst_fr_mul, blst_fr_sub, blst_p1, blst_p1_affine,
    blst_p1_affine_in_g1, blst_p1_compress, blst_p1_uncompress, blst_p1s_mult_pippenger,
    blst_p1s_mult_pippenger_scratch_sizeof, blst_p2, blst_p2_affine, blst_p2_compress,
    blst_p2_uncompress, blst_p2s_mult_pippenger, blst_p2s_mult_pippenger_scratch_sizeof,
    blst_scalar, blst_scalar_from_fr, blst_scalar_from_le_bytes,
};

/// An element of the scalar field Fr (kept in blst's Montgomery form).
// Debug prints the Montgomery limbs: only ever useful in a failing test.
#[derive(Clone, Copy, PartialEq, Eq, Default, Debug)]
pub(crate) struct Scalar(blst_fr);

impl Scalar {
    pub fn from_u64(v: u64) -> Self {
        let limbs = [v, 0, 0, 0];
        let mut out = blst_fr::default();
        // SAFETY: `limbs` is 4 u64s, as blst_fr_from_uint64 reads.
        unsafe { blst_fr_from_uint64(&mut out, limbs.as_ptr()) };
        Self(out)
    }

    /// A uniformly random scalar: 64 random bytes reduced modulo the group order.
    pub fn random<R: rand::RngCore + rand::CryptoRng>(rng: &mut R) -> Self {
        let mut wide = [0u8; 64];
        rng.fill_bytes(&mut wide);
        let mut s = blst_scalar::default();
        let mut out = blst_fr::default();
        // SAFETY: `wide` is 64 readable bytes; `s` and `out` are valid out-pointers.
        unsafe {
            blst_scalar_from_le_bytes(&mut s, wide.as_ptr(), wide.len());
            blst_fr_from_scalar(&mut out, &s);
        }
        Self(out)
    }

    /// From 32 big-endian bytes, reduced modulo the group order.
    pub fn from_be_bytes(bytes: &[u8; 32]) -> Self {
        let mut s = blst_scalar::default();
        let mut out = blst_fr::default();
        // SAFETY: `bytes` is 32 readable bytes; out-pointers are valid.
        unsafe {
            blst::blst_scalar_from_bendian(&mut s, bytes.as_ptr());
            blst_fr_from_scalar(&mut out, &s);
        }
        Self(out)
    }

    pub fn is_zero(&self) -> bool {
        self.0 == blst_fr::default()
    }

    pub fn add(&self, other: &Self) -> Self {
        let mut out = blst_fr::default();
        // SAFETY: valid pointers to initialised field elements.
        unsafe { blst_fr_add(&mut out, &self.0, &other.0) };
        Self(out)
    }

    pub fn sub(&self, other: &Self) -> Self {
        let mut out = blst_fr::default();
        // SAFETY: as above.
        unsafe { blst_fr_sub(&mut out, &self.0, &other.0) };
        Self(out)
    }

    pub fn mul(&self, other: &Self) -> Self {
        let mut out = blst_fr::default();
        // SAFETY: as above.
        unsafe { blst_fr_mul(&mut out, &self.0, &other.0) };
        Self(out)
    }

    /// The multiplicative inverse; `None` for zero.
    pub fn inverse(&self) -> Option<Self> {
        if self.is_zero() {
            return None;
        }
        let mut out = blst_fr::default();
        // SAFETY: as above.
        unsafe { blst_fr_inverse(&mut out, &self.0) };
        Some(Self(out))
    }

    fn to_blst_scalar(self) -> blst_scalar {
        let mut s = blst_scalar::default();
        // SAFETY: as above.
        unsafe { blst_scalar_from_fr(&mut s, &self.0) };
        s
    }

    /// 32 bytes big-endian: the encoding of a BLS secret key.
    pub fn to_be_bytes(self) -> [u8; 32] {
        let s = self.to_blst_scalar();
        let mut out = [0u8; 32];
        // SAFETY: `out` has the 32 bytes blst writes.
        unsafe { blst_bendian_from_scalar(out.as_mut_ptr(), &s) };
        out
    }
}

/// `sum_i scalars[i] * points[i]` in G2, for compressed points; used to combine
/// signature shares with Lagrange coefficients. One multi-scalar multiplication
/// (blst's, which for a few points shares the doublings between them), not one
/// multiplication per share: the 255 doublings are paid once.
pub(crate) fn g2_linear_combination(
    points: &[&[u8]],
    scalars: &[Scalar],
) -> Result<[u8; SIGNATURE_BYTES], CryptoError> {
    // blst reads one scalar per point: a shorter list would be read past its end.
    assert_eq!(points.len(), scalars.len(), "one scalar per point");
    if points.is_empty() {
        return Err(CryptoError::Empty);
    }
    let mut affines = Vec::with_capacity(points.len());
    for bytes in points {
        // blst reads a compressed point's size from the pointer.
        assert_eq!(bytes.len(), SIGNATURE_BYTES, "a compressed G2 point");
        let mut affine = blst_p2_affine::default();
        // SAFETY: `bytes` holds SIGNATURE_BYTES bytes (asserted), a compressed G2 point's size.
        let err = unsafe { blst_p2_uncompress(&mut affine, bytes.as_ptr()) };
        if err != BLST_ERROR::BLST_SUCCESS {
            return Err(CryptoError::Malformed {
                what: "BLS signature share",
                reason: format!("{err:?}"),
            });
        }
        affines.push(affine);
    }
    let ks: Vec<blst_scalar> = scalars.iter().map(|k| k.to_blst_scalar()).collect();
    let point_ptrs: Vec<*const blst_p2_affine> = affines.iter().map(|a| a as *const _).collect();
    let scalar_ptrs: Vec<*const u8> = ks.iter().map(|k| k.b.as_ptr()).collect();
    // SAFETY: a pure function of the count; blst reports the scratch size in bytes.
    let scratch_bytes = unsafe { blst_p2s_mult_pippenger_scratch_sizeof(points.len()) };
    // A u64 buffer of at least that many bytes is aligned for blst's limbs.
    let mut scratch = vec![0u64; scratch_bytes.div_ceil(8).max(1)];
    let mut acc = blst_p2::default();
    // SAFETY: `point_ptrs` and `scalar_ptrs` hold `points.len()` pointers to live,
    // initialised affine points and 32-byte little-endian scalars (the low 255 bits are
    // read: the group order is below 2^255); `scratch` is as large as blst asked.
    unsafe {
        blst_p2s_mult_pippenger(
            &mut acc,
            point_ptrs.as_ptr(),
            points.len(),
            scalar_ptrs.as_ptr(),
            255,
            scratch.as_mut_ptr(),
        );
    }
    let mut out = [0u8; SIGNATURE_BYTES];
    // SAFETY: `out` has room for a compressed G2 point.
    unsafe { blst_p2_compress(out.as_mut_ptr(), &acc) };
    Ok(out)
}

/// `sum_i scalars[i] * points[i]` in G1, for compressed points each checked to be in
/// G1 (they come from other nodes: commitments of a resharing); one multi-scalar
/// multiplication, as for G2 above. Used to evaluate a dealing's commitments and to
/// derive public key shares.
pub(crate) fn g1_linear_combination(
    points: &[&[u8]],
    scalars: &[Scalar],
) -> Result<[u8; PUBLIC_KEY_BYTES], CryptoError> {
    assert_eq!(points.len(), scalars.len(), "one scalar per point");
    if points.is_empty() {
        return Err(CryptoError::Empty);
    }
    let mut affines = Vec::with_capacity(points.len());
    for bytes in points {
        if bytes.len() != PUBLIC_KEY_BYTES {
            return Err(CryptoError::Malformed {
                what: "G1 point",
                reason: format!("expected {PUBLIC_KEY_BYTES} bytes, got {}", bytes.len()),
            });
        }
        let mut affine = blst_p1_affine::default();
        // SAFETY: `bytes` holds PUBLIC_KEY_BYTES bytes (checked), a compressed G1 point's size.
        let err = unsafe { blst_p1_uncompress(&mut affine, bytes.as_ptr()) };
        // SAFETY: `affine` is an initialised point.
        if err != BLST_ERROR::BLST_SUCCESS || !unsafe { blst_p1_affine_in_g1(&affine) } {
            return Err(CryptoError::Malformed {
                what: "G1 point",
                reason: format!("{err:?} or not in the group"),
            });
        }
        affines.push(affine);
    }
    let ks: Vec<blst_scalar> = scalars.iter().map(|k| k.to_blst_scalar()).collect();
    let point_ptrs: Vec<*const blst_p1_affine> = affines.iter().map(|a| a as *const _).collect();
    let scalar_ptrs: Vec<*const u8> = ks.iter().map(|k| k.b.as_ptr()).collect();
    // SAFETY: a pure function of the count.
    let scratch_bytes = unsafe { blst_p1s_mult_pippenger_scratch_sizeof(points.len()) };
    let mut scratch = vec![0u64; scratch_bytes.div_ceil(8).max(1)];
    let mut acc = blst_p1::default();
    // SAFETY: as for G2: `points.len()` live affine points and 32-byte scalars, and the
    // scratch blst asked for.
    unsafe {
        blst_p1s_mult_pippenger(
            &mut acc,
            point_ptrs.as_ptr(),
            points.len(),
            scalar_ptrs.as_ptr(),
            255,
            scratch.as_mut_ptr(),
        );
    }
    let mut out = [0u8; PUBLIC_KEY_BYTES];
    // SAFETY: `out` has room for a compressed G1 point.
    unsafe { blst_p1_compress(out.as_mut_ptr(), &acc) };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn field_laws_on_random_elements() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(9);
        for _ in 0..50 {
            let (a, b, c) = (
                Scalar::random(&mut rng),
                Scalar::random(&mut rng),
                Scalar::random(&mut rng),
            );
            assert_eq!(a.add(&b), b.add(&a));
            assert_eq!(a.mul(&b.add(&c)), a.mul(&b).add(&a.mul(&c)));
            assert_eq!(a.sub(&a), Scalar::default());
            let inv = a.inverse().expect("random is non-zero");
            assert_eq!(a.mul(&inv), Scalar::from_u64(1));
        }
        assert!(Scalar::from_u64(0).inverse().is_none());
        assert_eq!(
            Scalar::from_u64(2).add(&Scalar::from_u64(3)),
            Scalar::from_u64(5)
        );
        let mut be = [0u8; 32];
        be[31] = 5;
        assert_eq!(Scalar::from_u64(5).to_be_bytes(), be);
    }
}
