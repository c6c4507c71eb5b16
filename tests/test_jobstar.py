"""RELION's Reconstruct particle job without a GUI: options, command line, job.star, queue."""

from __future__ import annotations

import shlex
import textwrap

import pytest

from napari_subtomo_recon.cli import parse_args
from napari_subtomo_recon.errors import InputError
from napari_subtomo_recon.io import jobstar as js

# name: (label, default, min, max, step) as RELION 5 (pipeline_jobs.cpp, spec section 9)
RELION_FIELDS = {
    "in_optimisation": ("Input optimisation set:", "", None, None, None),
    "use_direct_entries": ("OR: use direct entries?", False, None, None, None),
    "in_particles": ("Input particle set:", "", None, None, None),
    "in_tomograms": ("Input tomogram set:", "", None, None, None),
    "in_trajectories": ("Input trajectory set:", "", None, None, None),
    "binning": ("Binning factor:", 1, 1, 16, 1),
    "box_size": ("Box size (binned pix):", 128, 32, 512, 16),
    "crop_size": ("Cropped box size (binned pix):", -1, -1, 512, 16),
    "snr": ("Wiener SNR constant:", 0, 0, 0.0001, 0.00001),
    "sym_name": ("Symmetry:", "C1", None, None, None),
    "do_helix": ("Apply helical symmetry?", False, None, None, None),
    "helical_nr_asu": ("Number of unique asymmetrical units:", 1, 1, 100, 1),
    "helical_twist": ("Helical twist (deg):", -1, -50, 50, 1),
    "helical_rise": ("Helical rise (A):", 4.75, 0, 50, 0.5),
    "helical_tube_outer_diameter": ("Outer helical diameter (A):", 200, 50, 300, 10),
    "helical_z_percentage": ("Central Z length (%):", 20, 5, 80, 1),
    "nr_mpi": ("Number of MPI procs:", 1, 1, 64, 1),
    "nr_threads": ("Number of threads:", 1, 1, 16, 1),
    "do_queue": ("Submit to queue?", False, None, None, None),
    "queuename": ("Queue name:", "openmpi", None, None, None),
    "qsub": ("Queue submit command:", "sbatch", None, None, None),
    "qsubscript": (
        "Standard submission script:", "/public/EM/RELION/relion/bin/relion_qsub.csh",
        None, None, None,
    ),
    "min_dedicated": ("Minimum dedicated cores per node:", 1, 1, 64, 1),
    "other_args": ("Additional arguments:", "", None, None, None),
}  # fmt: skip

# The tutorial's Reconstruct particle step (bin 6, box 192, crop 96, C6, 5 MPI x 12 threads)
TUTORIAL = {
    "in_optimisation": "Extract/job010/optimisation_set.star",
    "output_dir": "Reconstruct/job011/",
    "binning": 6,
    "box_size": 192,
    "crop_size": 96,
    "snr": 0,
    "sym_name": "C6",
    "nr_mpi": 5,
    "nr_threads": 12,
    "mem": 50,
}


def test_relion_job_options_labels_defaults_ranges():
    opts = js.job_options(env={})
    relion = {n: o for n, o in opts.items() if o.relion}
    assert set(relion) == set(RELION_FIELDS)
    for name, (label, default, lo, hi, step) in RELION_FIELDS.items():
        o = opts[name]
        assert (o.label, o.min, o.max, o.step) == (label, lo, hi, step), name
        assert o.default == default, name
        assert o.help, name
    assert [o.tab for o in opts.values() if o.relion][:5] == ["I/O"] * 5
    assert {opts[n].tab for n in ("binning", "box_size", "crop_size", "snr", "sym_name")} == {
        "Average"
    }
    # ours: where RELION has no option
    assert {n for n, o in opts.items() if not o.relion} == {"project_dir", "output_dir", "mem"}


def test_running_tab_follows_relion_environment():
    env = {
        "RELION_QSUB_NRMPI": "4",
        "RELION_MPI_MAX": "8",
        "RELION_QSUB_NRTHREADS": "3",
        "RELION_THREAD_MAX": "24",
        "RELION_QUEUE_USE": "yes",
        "RELION_QUEUE_NAME": "gpu",
        "RELION_QSUB_COMMAND": "qsub",
        "RELION_QSUB_TEMPLATE": "/opt/relion/qsub.sh",
        "RELION_MINIMUM_DEDICATED": "24",
        "RELION_QSUB_EXTRA_COUNT": "1",
        "RELION_QSUB_EXTRA1": "Max hours:",
        "RELION_QSUB_EXTRA1_DEFAULT": "12",
    }
    o = js.job_options(env)
    assert (o["nr_mpi"].default, o["nr_mpi"].max) == (4, 8)
    assert (o["nr_threads"].default, o["nr_threads"].max) == (3, 24)
    assert o["do_queue"].default is True
    assert (o["queuename"].default, o["qsub"].default) == ("gpu", "qsub")
    assert o["qsubscript"].default == "/opt/relion/qsub.sh"
    assert o["min_dedicated"].default == 24
    assert (o["qsub_extra1"].label, o["qsub_extra1"].default) == ("Max hours:", "12")


def test_tutorial_command_is_relions_with_our_program():
    cmd = js.build_command(TUTORIAL, env={})
    assert str(cmd) == (
        "mpirun -n 5 subtomo-recon --i Extract/job010/optimisation_set.star --theme classic "
        "--o Reconstruct/job011/ --b 192 --crop 96 --bin 6 --j 12 --j_out 12 --j_in 1 "
        "--sym C6 --mem 50 --pipeline_control Reconstruct/job011/"
    )
    # queued: no mpirun prefix (the template has it)
    assert js.build_command({**TUTORIAL, "do_queue": True}, env={}).tokens()[0] == "subtomo-recon"
    # the command line parses into the same parameters as the widget uses
    params, _ = js.params_from_values(TUTORIAL)
    again, _ = parse_args(shlex.split(str(cmd))[4:])
    assert params == again
    assert (params.b, params.crop, params.bin, params.sym, params.mem) == (192, 96, 6.0, "C6", 50)
    assert (params.j, params.j_out, params.j_in) == (12, 12, 1)


def test_command_variants():
    base = {"in_optimisation": "o.star", "output_dir": "Reconstruct/job002"}
    args = js.build_command(base, env={}).args
    assert args[args.index("--o") + 1] == "Reconstruct/job002/"
    assert "--crop" not in args and "--SNR" not in args and "--nr_helical_asu" not in args
    direct = {
        **base, "in_optimisation": "", "use_direct_entries": True, "in_particles": "p.star",
        "in_tomograms": "t.star", "in_trajectories": "m.star", "snr": 0.00005,
        "do_helix": True, "helical_nr_asu": 4, "helical_twist": -22.5, "other_args": "--whiten",
    }  # fmt: skip
    a = js.build_command(direct, is_continue=True, env={}).args
    assert a[:6] == ["--p", "p.star", "--t", "t.star", "--mot", "m.star"]
    assert a[a.index("--SNR") + 1] == "5e-05"
    i = a.index("--nr_helical_asu")
    assert a[i : i + 6] == [
        "--nr_helical_asu", "4", "--helical_twist", "-22.5", "--helical_rise", "4.75",
    ]  # fmt: skip
    assert "--only_do_unfinished" in a and "--whiten" in a
    assert a[-2:] == ["--pipeline_control", "Reconstruct/job002/"]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"in_optimisation": ""}, "no optimisation set"),
        ({"use_direct_entries": True}, "optimisation set entry is not empty"),
        ({"in_optimisation": "", "use_direct_entries": True}, "no tomogram set"),
        ({"crop_size": 256}, "--crop 256: the cropped box must not exceed the box"),
        ({"box_size": 129}, "--b 129: the box size must be even"),
        ({"sym_name": "Q7"}, "--sym Q7"),
        ({"other_args": "--frobnicate 3"}, "unknown flag --frobnicate"),
        ({"other_args": "--j 4"}, "--j given twice"),
        ({"other_args": "'unclosed"}, "Additional arguments"),
        ({"in_optimisation": "missing.star"}, "missing.star: file not found"),
        ({"do_queue": True, "qsubscript": "nope.sh"}, "nope.sh: file not found"),
    ],
)
def test_invalid_settings_are_refused_with_one_line(tmp_path, change, message):
    (tmp_path / "opt.star").write_text("data_\n_rlnTomoParticlesFile p.star\n")
    values = {"in_optimisation": "opt.star", "output_dir": "Reconstruct/job001/", "box_size": 128}
    assert js.check_values(values, tmp_path) is None
    msg = js.check_values({**values, **change}, tmp_path)
    assert msg is not None and message in msg and "\n" not in msg


def test_job_star_round_trip(tmp_path):
    values = {**js.default_values(env={}), **TUTORIAL, "other_args": "--whiten --taper 4"}
    job = js.JobStar(options=js.job_star_values(values, env={}))
    assert job.options["other_args"] == "--mem 50 --whiten --taper 4"  # RELION has no mem
    assert "mem" not in job.options and "output_dir" not in job.options
    path = js.write_job_star(tmp_path / "Reconstruct" / "job011", job)
    assert path == tmp_path / "Reconstruct" / "job011" / "job.star"
    text = path.read_text()
    assert "data_job" in text and "data_joboptions_values" in text
    assert "_rlnJobTypeLabel             relion.reconstructparticletomo" in text
    assert '"--mem 50 --whiten --taper 4"' in text
    assert '"' + '"' in text  # empty values are written as "" like RELION
    back = js.read_job_star(path.parent)
    assert back.type_label == "relion.reconstructparticletomo" and back.is_tomo
    assert back.options == job.options
    vals, notes = js.values_from_job_star(back, env={})
    assert not notes
    for k in ("binning", "box_size", "crop_size", "sym_name", "nr_mpi", "nr_threads", "mem"):
        assert vals[k] == values[k], k
    assert vals["other_args"] == "--whiten --taper 4"
    assert isinstance(vals["box_size"], int) and vals["use_direct_entries"] is False


def test_reads_a_job_star_as_relion_writes_it(tmp_path):
    text = textwrap.dedent(
        """
        # version 50001

        data_job

        _rlnJobTypeLabel             relion.reconstructparticletomo
        _rlnJobIsContinue                       0
        _rlnJobIsTomo                           1


        # version 50001

        data_joboptions_values

        loop_
        _rlnJobOptionVariable #1
        _rlnJobOptionValue #2
            binning          6
           box_size        192
          crop_size         96
           do_helix         No
           do_queue         No
        in_optimisation Extract/job010/optimisation_set.star
        in_particles         ""
        min_dedicated          1
            nr_mpi          5
        nr_threads         12
        other_args "--mem 50 "
          sym_name         C6
        use_direct_entries         No
        qsubscript /public/EM/RELION/relion/bin/relion_qsub.csh
        some_future_option  3
        """
    )
    (tmp_path / "job.star").write_text(text)
    job = js.read_job_star(tmp_path / "job.star")
    assert job.options["in_particles"] == "" and job.options["other_args"] == "--mem 50 "
    vals, notes = js.values_from_job_star(job, env={})
    assert vals["binning"] == 6 and vals["box_size"] == 192 and vals["mem"] == 50
    assert vals["other_args"] == "" and vals["sym_name"] == "C6" and vals["nr_threads"] == 12
    assert notes == ["job.star: ignoring unknown job option 'some_future_option'"]
    cmd = js.build_command({**vals, "output_dir": "Reconstruct/job011/"}, env={})
    assert str(cmd) == str(js.build_command(TUTORIAL, env={}))


def test_job_star_of_another_job_type_is_refused(tmp_path):
    (tmp_path / "job.star").write_text(
        "data_job\n_rlnJobTypeLabel relion.refine3d.tomo\n_rlnJobIsContinue 0\n"
        "data_joboptions_values\nloop_\n_rlnJobOptionVariable #1\n_rlnJobOptionValue #2\n"
        "fn_img x.star\n"
    )
    with pytest.raises(InputError, match="relion.refine3d.tomo"):
        js.read_job_star(tmp_path)
    with pytest.raises(InputError, match="not found"):
        js.read_job_star(tmp_path / "nothing")


def test_next_job_number_follows_the_project(tmp_path):
    assert js.next_job_dir(tmp_path) == "Reconstruct/job001/"
    (tmp_path / "Extract" / "job010").mkdir(parents=True)
    (tmp_path / "Reconstruct" / "job004").mkdir(parents=True)
    assert js.next_job_dir(tmp_path) == "Reconstruct/job011/"
    (tmp_path / "default_pipeline.star").write_text(
        "data_pipeline_general\n_rlnPipeLineJobCounter 23\n"
    )
    assert js.next_job_dir(tmp_path) == "Reconstruct/job023/"


def test_submission_script_placeholders():
    template = textwrap.dedent(
        """\
        #!/bin/bash
        #SBATCH --partition=XXXqueueXXX --ntasks=XXXmpinodesXXX --cpus-per-task=XXXthreadsXXX
        #SBATCH --nodes=XXXnodesXXX --error=XXXerrfileXXX --output=XXXoutfileXXX
        #SBATCH --time=XXXextra1XXX  # XXXcoresXXX cores, XXXdedicatedXXX per node, XXXnameXXX
        mpirun -n XXXmpinodesXXX XXXcommandXXX
        """
    )
    values = {**TUTORIAL, "queuename": "cpu", "min_dedicated": 24, "qsub_extra1": "12:00:00"}
    cmd = js.build_command({**values, "do_queue": True}, env={})
    text = js.submission_script(template, [str(cmd)], values, "Reconstruct/job011")
    assert "--partition=cpu --ntasks=5 --cpus-per-task=12" in text
    assert (
        "--nodes=3 --error=Reconstruct/job011/run.err --output=Reconstruct/job011/run.out" in text
    )
    assert "--time=12:00:00  # 60 cores, 24 per node, Reconstruct/job011/" in text
    assert "mpirun -n 5 subtomo-recon --i Extract/job010/optimisation_set.star" in text
    assert "XXX" not in text


def test_note_is_relions(tmp_path):
    js.append_note(tmp_path, ["subtomo-recon --i a.star"])
    js.append_note(tmp_path, ["subtomo-recon --i b.star"])
    text = (tmp_path / "note.txt").read_text()
    assert text.count(" ++++ Executing new job on ") == 2
    assert " ++++ with the following command(s): \nsubtomo-recon --i b.star\n ++++ \n" in text


def test_status_files(tmp_path):
    js.mark_status(tmp_path, "failure")
    assert (tmp_path / "RELION_JOB_EXIT_FAILURE").exists()
    js.clear_status(tmp_path)
    assert not list(tmp_path.iterdir())
