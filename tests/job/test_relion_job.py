"""RELION's Reconstruct particle job without a GUI: options, command line, job.star, queue."""

from __future__ import annotations

import dataclasses
import shlex
import textwrap

import pytest

from napari_subtomo_recon.cli import parse_args
from napari_subtomo_recon.errors import InputError
from napari_subtomo_recon.io import jobstar as js
from napari_subtomo_recon.job import relion
from napari_subtomo_recon.params import FIELDS, ReconstructParams, spec_of

# job option: (label, GUI default, slider min, max, step) as RELION 5 (pipeline_jobs.cpp)
RELION_FIELDS = {
    "in_optimisation": ("Input optimisation set:", "", None),
    "use_direct_entries": ("OR: use direct entries?", False, None),
    "in_particles": ("Input particle set:", "", None),
    "in_tomograms": ("Input tomogram set:", "", None),
    "in_trajectories": ("Input trajectory set:", "", None),
    "binning": ("Binning factor:", 1, (1, 16, 1)),
    "box_size": ("Box size (binned pix):", 128, (32, 512, 16)),
    "crop_size": ("Cropped box size (binned pix):", -1, (-1, 512, 16)),
    "snr": ("Wiener SNR constant:", 0, (0, 0.0001, 0.00001)),
    "sym_name": ("Symmetry:", "C1", None),
    "do_helix": ("Apply helical symmetry?", False, None),
    "helical_nr_asu": ("Number of unique asymmetrical units:", 1, (1, 100, 1)),
    "helical_twist": ("Helical twist (deg):", -1, (-50, 50, 1)),
    "helical_rise": ("Helical rise (A):", 4.75, (0, 50, 0.5)),
    "helical_tube_outer_diameter": ("Outer helical diameter (A):", 200, (50, 300, 10)),
    "helical_z_percentage": ("Central Z length (%):", 20, (5, 80, 1)),
    "nr_mpi": ("Number of MPI procs:", 1, (1, 64, 1)),
    "nr_threads": ("Number of threads:", 1, (1, 16, 1)),
    "do_queue": ("Submit to queue?", False, None),
    "queuename": ("Queue name:", "openmpi", None),
    "qsub": ("Queue submit command:", "sbatch", None),
    "qsubscript": (
        "Standard submission script:", "/public/EM/RELION/relion/bin/relion_qsub.csh", None
    ),
    "min_dedicated": ("Minimum dedicated cores per node:", 1, (1, 64, 1)),
    "other_args": ("Additional arguments:", "", None),
}  # fmt: skip

# The tutorial's Reconstruct particle step (bin 6, box 192, crop 96, C6, 5 MPI x 12 threads)
TUTORIAL = ReconstructParams.for_gui(env={}).replace(
    optimisation_set="Extract/job010/optimisation_set.star",
    output_dir="Reconstruct/job011/",
    binning=6.0,
    box_size=192,
    crop_size=96,
    snr=0.0,
    symmetry="C6",
    nr_mpi=5,
    threads=12,
    memory_gb=50.0,
)


def test_relion_job_options_labels_defaults_ranges():
    gui = ReconstructParams.for_gui(env={})
    by_option = {spec_of(f).job_option: f for f in FIELDS.values() if spec_of(f).job_option}
    assert set(by_option) == set(RELION_FIELDS)
    for key, (label, default, slider) in RELION_FIELDS.items():
        f = by_option[key]
        s = spec_of(f)
        assert s.label.rstrip() == label, key
        assert getattr(gui, f.name) == default, key
        assert s.slider == slider, key
        assert s.help, key
    assert [spec_of(by_option[k]).tab for k in list(RELION_FIELDS)[:5]] == ["I/O"] * 5
    assert {spec_of(by_option[k]).tab for k in ("binning", "box_size", "crop_size", "snr",
                                                "sym_name")} == {"Average"}  # fmt: skip
    # RELION's help texts, verbatim (pipeline_jobs.cpp)
    assert spec_of(FIELDS["box_size"]).help.startswith(
        "Box size of the reconstruction. Note that this is independent of the box size"
    )


def test_running_tab_follows_relion_environment():
    env = {
        "RELION_QSUB_NRMPI": "4",
        "RELION_QSUB_NRTHREADS": "3",
        "RELION_QUEUE_USE": "yes",
        "RELION_QUEUE_NAME": "gpu",
        "RELION_QSUB_COMMAND": "qsub",
        "RELION_QSUB_TEMPLATE": "/opt/relion/qsub.sh",
        "RELION_MINIMUM_DEDICATED": "24",
        "RELION_QSUB_EXTRA_COUNT": "1",
        "RELION_QSUB_EXTRA1": "Max hours:",
        "RELION_QSUB_EXTRA1_DEFAULT": "12",
    }
    p = ReconstructParams.for_gui(env)
    assert (p.nr_mpi, p.threads, p.do_queue) == (4, 3, True)
    assert (p.queuename, p.qsub, p.qsubscript) == ("gpu", "qsub", "/opt/relion/qsub.sh")
    assert p.min_dedicated == 24
    assert p.qsub_extras == {"qsub_extra1": "12"}


def test_tutorial_command_is_relions_with_our_program():
    cmd = relion.build_command(TUTORIAL, env={})
    assert str(cmd) == (
        "mpirun -n 5 subtomo-recon --i Extract/job010/optimisation_set.star --theme classic "
        "--o Reconstruct/job011/ --b 192 --crop 96 --bin 6 --j 12 --j_out 12 --j_in 1 "
        "--sym C6 --mem 50 --pipeline_control Reconstruct/job011/"
    )
    # queued: no mpirun prefix (the template has it)
    queued = relion.build_command(TUTORIAL.replace(do_queue=True), env={})
    assert queued.tokens()[0] == "subtomo-recon"
    # what the program makes of the command is what the form holds
    params, _ = parse_args(shlex.split(str(cmd))[4:])
    assert params == relion.run_params(TUTORIAL)
    b = params
    assert (b.box_size, b.crop_size, b.binning, b.symmetry, b.memory_gb) == (192, 96, 6.0, "C6", 50)
    assert (b.threads, b.threads_out, b.threads_in) == (12, 12, 1)


def test_command_variants():
    base = ReconstructParams.for_gui(env={}).replace(
        optimisation_set="o.star", output_dir="Reconstruct/job002"
    )
    args = relion.build_command(base, env={}).args
    assert args[args.index("--o") + 1] == "Reconstruct/job002/"
    assert "--crop" not in args and "--SNR" not in args and "--nr_helical_asu" not in args
    direct = base.replace(
        optimisation_set="", use_direct_entries=True, particles="p.star", tomograms="t.star",
        trajectories="m.star", snr=0.00005, do_helix=True, helical_units=4, helical_twist=-22.5,
        other_args="--whiten",
    )  # fmt: skip
    a = relion.build_command(direct, is_continue=True, env={}).args
    assert a[:6] == ["--p", "p.star", "--t", "t.star", "--mot", "m.star"]
    assert a[a.index("--SNR") + 1] == "5e-05"
    i = a.index("--nr_helical_asu")
    assert a[i : i + 6] == [
        "--nr_helical_asu", "4", "--helical_twist", "-22.5", "--helical_rise", "4.75",
    ]  # fmt: skip
    assert "--only_do_unfinished" in a and "--whiten" in a
    assert a[-2:] == ["--pipeline_control", "Reconstruct/job002/"]
    # our options travel after RELION's flags, before the additional arguments
    ours = base.replace(exact=True, taper=4.0, other_args="--no_backup")
    a = relion.build_command(ours, env={}).args
    assert a[a.index("--sym") + 2 :] == [
        "--taper", "4", "--exact", "--no_backup", "--pipeline_control", "Reconstruct/job002/",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "change, message",
    [
        ({"optimisation_set": ""}, "no optimisation set"),
        ({"use_direct_entries": True}, "optimisation set entry is not empty"),
        ({"optimisation_set": "", "use_direct_entries": True}, "no tomogram set"),
        ({"crop_size": 256}, "--crop 256: the cropped box must not exceed the box"),
        ({"box_size": 129}, "--b 129: must be even"),
        ({"symmetry": "Q7"}, "--sym Q7"),
        ({"taper": float("nan")}, "--taper nan: must be a finite number"),
        ({"other_args": "--frobnicate 3"}, "unknown flag --frobnicate"),
        ({"other_args": "--j 4"}, "--j given twice"),
        ({"other_args": "'unclosed"}, "Additional arguments"),
        ({"optimisation_set": "missing.star"}, "missing.star: file not found"),
        ({"do_queue": True, "qsubscript": "nope.sh"}, "nope.sh: file not found"),
    ],
)
def test_invalid_settings_are_refused_with_one_line(tmp_path, change, message):
    (tmp_path / "opt.star").write_text("data_\n_rlnTomoParticlesFile p.star\n")
    p = ReconstructParams.for_gui(env={}).replace(
        project_dir=str(tmp_path), optimisation_set="opt.star",
        output_dir="Reconstruct/job001/", box_size=128,
    )  # fmt: skip
    assert relion.check(p, env={}) is None
    msg = relion.check(p.replace(**change), env={})
    assert msg is not None and message in msg and "\n" not in msg


def test_job_star_round_trip(tmp_path):
    p = TUTORIAL.replace(other_args="--j_in 2", whiten=True, taper=4.0, exact=True)
    options = relion.job_star_options(p)
    # RELION has no memory, whitening, taper or exact field: they go with its arguments
    assert options["other_args"] == "--whiten --taper 4 --exact --mem 50 --j_in 2"
    assert "memory_gb" not in options and "output_dir" not in options
    path = relion.write_job(tmp_path / "Reconstruct" / "job011", p)
    assert path == tmp_path / "Reconstruct" / "job011" / "job.star"
    text = path.read_text()
    assert "data_job" in text and "data_joboptions_values" in text
    assert "_rlnJobTypeLabel             relion.reconstructparticletomo" in text
    assert '"--whiten --taper 4 --exact --mem 50 --j_in 2"' in text
    assert '"' + '"' in text  # empty values are written as "" like RELION
    back = js.read_job_star(path.parent)
    assert back.type_label == "relion.reconstructparticletomo" and back.is_tomo
    assert back.options == options
    again, job, notes = relion.read_job(path)
    assert not notes
    assert again.replace(project_dir="", output_dir="") == p.replace(project_dir="", output_dir="")
    assert again.project_dir == str(tmp_path)
    assert isinstance(again.box_size, int) and again.use_direct_entries is False


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
    p, notes = relion.params_from_job_star(job, env={})
    assert p.binning == 6 and p.box_size == 192 and p.memory_gb == 50
    assert p.other_args == "" and p.symmetry == "C6" and p.threads == 12
    assert notes == ["job.star: ignoring unknown job option 'some_future_option'"]
    cmd = relion.build_command(p.replace(output_dir="Reconstruct/job011/"), env={})
    assert str(cmd) == str(relion.build_command(TUTORIAL, env={}))


def test_job_star_values_are_checked_like_flags(tmp_path):
    job = js.JobStar(options={"box_size": "1e3", "binning": "0.5"})
    with pytest.raises(InputError, match=r"job.star: binning '0.5': must be ≥ 1"):
        relion.params_from_job_star(job, env={})
    p, _ = relion.params_from_job_star(js.JobStar(options={"box_size": "1e3"}), env={})
    assert p.box_size == 1000  # written as RELION's GUI may write a number
    with pytest.raises(InputError, match=r"box_size '12.5': expected an integer"):
        relion.params_from_job_star(js.JobStar(options={"box_size": "12.5"}), env={})


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
    assert relion.next_job_dir(tmp_path) == "Reconstruct/job001/"
    (tmp_path / "Extract" / "job010").mkdir(parents=True)
    (tmp_path / "Reconstruct" / "job004").mkdir(parents=True)
    assert relion.next_job_dir(tmp_path) == "Reconstruct/job011/"
    (tmp_path / "default_pipeline.star").write_text(
        "data_pipeline_general\n_rlnPipeLineJobCounter 23\n"
    )
    assert relion.next_job_dir(tmp_path) == "Reconstruct/job023/"


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
    p = TUTORIAL.replace(
        queuename="cpu", min_dedicated=24, qsub_extras={"qsub_extra1": "12:00:00"}, do_queue=True
    )
    cmd = relion.build_command(p, env={})
    text = relion.submission_script(template, [str(cmd)], p, "Reconstruct/job011")
    assert "--partition=cpu --ntasks=5 --cpus-per-task=12" in text
    assert (
        "--nodes=3 --error=Reconstruct/job011/run.err --output=Reconstruct/job011/run.out" in text
    )
    assert "--time=12:00:00  # 60 cores, 24 per node, Reconstruct/job011/" in text
    assert "mpirun -n 5 subtomo-recon --i Extract/job010/optimisation_set.star" in text
    assert "XXX" not in text


def test_note_is_relions(tmp_path):
    relion.append_note(tmp_path, ["subtomo-recon --i a.star"])
    relion.append_note(tmp_path, ["subtomo-recon --i b.star"])
    text = (tmp_path / "note.txt").read_text()
    assert text.count(" ++++ Executing new job on ") == 2
    assert " ++++ with the following command(s): \nsubtomo-recon --i b.star\n ++++ \n" in text


def test_status_files(tmp_path):
    relion.mark_status(tmp_path, "failure")
    assert (tmp_path / "RELION_JOB_EXIT_FAILURE").exists()
    assert relion.status_of(tmp_path) == "failure"
    relion.clear_status(tmp_path)
    assert not list(tmp_path.iterdir())


def test_a_new_option_needs_one_field():
    """An option added as one field appears in the command line, job.star, the usage
    text, the form's specs and the checkpoint fingerprint, with nothing else changed."""
    from napari_subtomo_recon.cli import parse_args as parse
    from napari_subtomo_recon.cli import usage
    from napari_subtomo_recon.params import Domain, Spec, iter_specs, option, to_argv

    @dataclasses.dataclass
    class WithDummy(ReconstructParams):
        dummy_level: float = option(0.5, Spec(
            "Dummy level:", "A dummy option for this test.", flag="--dummy_level",
            tab="Average", advanced=True, checkpoint=True, domain=Domain(min=0.0, max=1.0),
            metavar="X",
        ))  # fmt: skip

    p, _ = parse(["--o", "x/", "--b", "32", "--dummy_level", "0.25"], WithDummy)
    assert p.dummy_level == 0.25
    assert "--dummy_level X" in usage(WithDummy) and "A dummy option" in usage(WithDummy)
    assert to_argv(p)[-2:] == ["--dummy_level", "0.25"]
    assert p.fingerprint()["dummy_level"] == 0.25
    assert ("dummy_level", "Average") in [(n, s.tab) for n, s, _ in iter_specs(WithDummy)]
    with pytest.raises(InputError, match="--dummy_level 2: must be in"):
        p.replace(dummy_level=2.0).check()
    # job.star: not a RELION option, so it travels in the additional arguments and back
    options = relion.job_star_options(p.replace(dummy_level=0.75))
    assert options["other_args"] == "--dummy_level 0.75"
    back, notes = relion.params_from_job_star(js.JobStar(options=options), env={}, cls=WithDummy)
    assert back.dummy_level == 0.75 and back.other_args == "" and not notes
