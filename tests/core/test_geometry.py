"""Geometry against the worked examples of the spec (§10) and independent constructions."""

import numpy as np
from scipy.spatial.transform import Rotation

from napari_subtomo_recon.core.geometry import (
    c_round,
    depth_offsets,
    euler_matrix,
    particle_positions,
    project,
    projection_matrix_r5,
    rot_x,
    rot_y,
    rot_z,
    rotation_about_axis,
    visible,
)


def test_active_rotations_turn_axes_counterclockwise():
    # active, right-handed: +90° about z takes x to y, about x takes y to z, about y takes z to x
    assert np.allclose(rot_z(90) @ [1, 0, 0], [0, 1, 0])
    assert np.allclose(rot_x(90) @ [0, 1, 0], [0, 0, 1])
    assert np.allclose(rot_y(90) @ [0, 0, 1], [1, 0, 0])
    for axis, f in (([1, 0, 0], rot_x), ([0, 1, 0], rot_y), ([0, 0, 1], rot_z)):
        assert np.allclose(rotation_about_axis(axis, 37.0), f(37.0))


def test_euler_matrix_matches_spec_example_and_zyz_decomposition():
    e1 = euler_matrix(10, 20, 30)
    expected = [
        [0.714610, 0.633718, -0.296198],
        [-0.613092, 0.771281, 0.171010],
        [0.336824, 0.059391, 0.939693],
    ]
    assert np.allclose(e1, expected, atol=1e-6)
    e2 = euler_matrix(-45, 90, 60)
    assert np.allclose(
        e2,
        [[0.612372, 0.612372, -0.5], [0.353553, 0.353553, 0.866025], [0.707107, -0.707107, 0]],
        atol=1e-6,
    )
    assert np.allclose(
        e1 @ e2,
        [
            [0.452217, 0.871105, 0.191511],
            [0.018171, -0.223674, 0.974495],
            [0.891723, -0.437203, -0.116978],
        ],
        atol=1e-6,
    )
    # independent: RELION's passive ZYZ = inverse of the active intrinsic zyz rotation
    rng = np.random.default_rng(0)
    ang = rng.uniform(-180, 180, (20, 3))
    ref = Rotation.from_euler("ZYZ", ang, degrees=True).inv().as_matrix()
    assert np.allclose(euler_matrix(ang[:, 0], ang[:, 1], ang[:, 2]), ref, atol=1e-12)


def test_projection_matrix_reproduces_relion_example_row():
    # spec §10.1: row TS_01_020_30.0 of the RELION test data, with R4 matrices in the same file
    P = projection_matrix_r5(
        0.0, 39.02, 85.365420, -93.11441 / 1.35, -138.41019 / 1.35, (4000, 4000, 3000), (3710, 3838)
    )[0]
    M = [[0.062776, -0.996730, 0.050871], [0.774386, 0.080801, 0.627533], [-0.629592, 0, 0.776926]]
    assert np.allclose(P[:3, :3], M, atol=2e-6)
    assert np.allclose(P[:3, 3], [3577.6279, -835.1985, 93.7939], atol=5e-4)
    assert np.allclose(P[3], [0, 0, 0, 1])


def test_example_a_position_depth_and_visibility():
    # spec §10.2
    P = projection_matrix_r5(
        0.0, 30.0, 0.0, 13.5 / 1.35, -6.75 / 1.35, (4000, 4000, 3000), (3710, 3838)
    )
    centre = np.array([2000.0, 2000.0, 1500.0])
    pos = particle_positions(
        np.array([[135.0, -270.0, 67.5]]) / 1.35 + centre,
        np.zeros((1, 3)),
        np.eye(3)[None],
        np.array([1.35]),
    )
    assert np.allclose(pos, [[2100, 1800, 1550]])
    u = project(P[0], pos[0])
    assert np.allclose(u[:2], [1976.6025, 1714.0], atol=1e-4)
    depth = depth_offsets(P, pos, centre)
    assert np.allclose(depth, -6.6987, atol=1e-4)
    assert visible(u[None, :2], (3710, 3838), 64.0)[0]
    assert not visible(np.array([[64.0, 1714.0]]), (3710, 3838), 64.0)[0]  # strict


def test_odd_tomogram_sizes_use_floor_in_matrix_and_half_in_centre():
    # the matrix uses floor(N/2), the de-centring N/2.0: an odd size moves the projection by 0.5 px
    P_even = projection_matrix_r5(0.0, 0.0, 0.0, 0.0, 0.0, (100, 100, 50), (100, 100))[0]
    P_odd = projection_matrix_r5(0.0, 0.0, 0.0, 0.0, 0.0, (101, 101, 51), (100, 100))[0]
    p_even = project(P_even, np.array([100, 100, 50]) / 2.0)
    p_odd = project(P_odd, np.array([101, 101, 51]) / 2.0)
    assert np.allclose(p_even[:2], [50, 50])
    assert np.allclose(p_odd[:2], [50.5, 50.5])


def test_origin_offsets_rotate_with_subtomogram_matrix_and_subtract():
    # spec §10.4
    a_sub = euler_matrix(10, 20, 30)
    pos = particle_positions(
        np.array([[2100.0, 1800, 1550]]),
        np.array([[2.7, -5.4, 1.35]]),
        a_sub[None],
        np.array([1.35]),
    )
    assert np.allclose(pos, [[2101.40185, 1804.14030, 1548.62422]], atol=1e-5)


def test_c_round_halves_away_from_zero():
    assert list(c_round([0.5, 1.5, 2.5, -0.5, -1.5, 1.49])) == [1, 2, 3, -1, -2, 1]
