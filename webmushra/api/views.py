"""API views: thin wrappers around the services and selectors.

Errors: 400 ``{"error": "file: problem"}`` for bad input, 409 for a request that
conflicts with the experiment's state, 404 for an experiment the caller may not see
(never 403, so its existence is not revealed), 401 without a valid token.
"""

from __future__ import annotations

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.renderers import BaseRenderer, BrowsableAPIRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from evaluation.errors import EvaluationError

from .. import access, errors, paradigms, results_csv, rules, selectors
from ..http import report_file_response
from ..models import Experiment
from ..services import block_settings, cabinet, experiments, rendering, reports, uploads
from . import serializers as s
from .parsers import StrictJSONParser

ERRORS = {
    400: OpenApiResponse(s.ErrorSerializer, description="Bad input; the message names the field or file."),
    404: OpenApiResponse(description="No such experiment (or not yours)."),
    409: OpenApiResponse(s.ErrorSerializer, description="Not possible in the experiment's current state."),
}


class CSVRenderer(BaseRenderer):
    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return data if isinstance(data, (str, bytes)) else str(data)


class ApiView(APIView):
    """Maps service errors onto HTTP answers and finds the caller's experiment."""

    renderer_classes = [JSONRenderer, BrowsableAPIRenderer]

    def handle_exception(self, exc):
        if isinstance(exc, errors.ConflictError):
            return Response({"error": str(exc)}, status=status.HTTP_409_CONFLICT)
        if isinstance(exc, errors.FieldError):
            return Response({"error": str(exc), "field": exc.field}, status=status.HTTP_400_BAD_REQUEST)
        if isinstance(exc, errors.ServiceError):
            return Response({"error": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        response = super().handle_exception(exc)
        # DRF's own answers (401, 403, 404, 405, 415, ...) in the documented shape: {"error": ...}.
        data = getattr(response, "data", None)
        if isinstance(data, dict) and set(data) == {"detail"}:
            response.data = {"error": str(data["detail"])}
        return response

    def experiment(self, pk: int) -> Experiment:
        return access.experiment_for(self.request.user, pk)

    def bad(self, serializer) -> Response:
        field, errors = next(iter(serializer.errors.items()))
        message = errors[0] if isinstance(errors, list) else errors
        return Response({"error": f"{field}: {message}", "fields": serializer.errors}, status=400)


class ExperimentList(ApiView):
    @extend_schema(responses=s.ExperimentSerializer(many=True), summary="List your experiments")
    def get(self, request):
        return Response(
            s.ExperimentSerializer(
                selectors.experiments_for(request.user), many=True, context={"request": request}
            ).data
        )

    @extend_schema(
        request=s.ExperimentCreateSerializer,
        responses={201: s.ExperimentDetailSerializer, **ERRORS},
        summary="Create an experiment",
    )
    def post(self, request):
        form = s.ExperimentCreateSerializer(data=request.data)
        if not form.is_valid():
            return self.bad(form)
        d = form.validated_data
        if isinstance(d["config"], dict):
            block_settings.precheck_blocks(d["config"].get("blocks"))
        config = rules.validate_config(d["config"] or {})
        experiment = experiments.create_experiment(
            owner=request.user,
            title=d["title"],
            description=d["description"],
            sample_rate=d["sample_rate"],
            anchors=d["anchors"],
            config=config,
        )
        return Response(s.ExperimentDetailSerializer(experiment, context={"request": request}).data, status=201)


class ExperimentDetail(ApiView):
    parser_classes = [StrictJSONParser]

    @extend_schema(responses={200: s.ExperimentDetailSerializer, 404: ERRORS[404]}, summary="An experiment")
    def get(self, request, pk: int):
        return Response(s.ExperimentDetailSerializer(self.experiment(pk), context={"request": request}).data)

    @extend_schema(
        request=s.ExperimentUpdateSerializer,
        responses={200: s.ExperimentDetailSerializer, **ERRORS},
        summary="Change texts and settings",
    )
    def patch(self, request, pk: int):
        experiment = self.experiment(pk)
        form = s.ExperimentUpdateSerializer(data=request.data, partial=True)
        if not form.is_valid():
            return self.bad(form)
        # The blocks make the trials when the experiment opens: they change only before then.
        block_settings.check_blocks_change(experiment, form.validated_data.get("config") or {})
        experiment = experiments.update_experiment_settings(experiment=experiment, **form.validated_data)
        return Response(s.ExperimentDetailSerializer(experiment, context={"request": request}).data)

    @extend_schema(
        request=None,
        responses={204: None, 404: ERRORS[404], 409: ERRORS[409]},
        summary="Delete the experiment with its files, participants and ratings (close it first)",
    )
    def delete(self, request, pk: int):
        experiments.delete_experiment(experiment=self.experiment(pk))
        return Response(status=204)


ABX_PARAMETERS = [
    OpenApiParameter(
        "abx_proportion",
        float,
        description="ABX blocks: the proportion correct to plan for (default 0.75).",
    ),
    OpenApiParameter("abx_power", float, description="ABX blocks: the power to plan for (default 0.8)."),
]


class ExperimentBlocks(ApiView):
    """The experiment's blocks (``config["blocks"]``) and what each gives every participant."""

    parser_classes = [StrictJSONParser]

    @staticmethod
    def answer(request, experiment: Experiment) -> Response:
        try:
            proportion, power = block_settings.parse_abx_inputs(
                request.query_params.get("abx_proportion"), request.query_params.get("abx_power")
            )
        except EvaluationError as exc:
            field = str(exc).split(":", 1)[0]
            return Response({"error": str(exc), "field": field}, status=400)
        plan = block_settings.block_plan(experiment, abx_proportion=proportion, abx_power=power)
        body = {
            "blocks": paradigms.blocks(experiment.config),
            "editable": experiment.is_editable,
            "plan": plan["blocks"],
            **{k: plan[k] for k in ("test_trials", "training_trials", "minutes", "problems", "notes")},
        }
        return Response(s.BlocksSerializer(body).data)

    @extend_schema(
        parameters=ABX_PARAMETERS,
        responses={200: s.BlocksSerializer, 400: ERRORS[400], 404: ERRORS[404]},
        summary="The blocks, and the trials and minutes each gives every participant",
    )
    def get(self, request, pk: int):
        return self.answer(request, self.experiment(pk))

    @extend_schema(
        request=s.BlocksWriteSerializer,
        parameters=ABX_PARAMETERS,
        responses={200: s.BlocksSerializer, **ERRORS},
        summary="Replace the blocks (draft or rendered experiments only)",
    )
    def put(self, request, pk: int):
        experiment = self.experiment(pk)
        data = request.data
        if not isinstance(data, dict) or "blocks" not in data:
            raise errors.FieldError("blocks", 'expected {"blocks": [...]}')
        unknown = sorted(set(data) - {"blocks"})
        if unknown:
            raise errors.FieldError(unknown[0], "not a setting of this endpoint")
        experiment = block_settings.set_blocks(experiment=experiment, blocks=data["blocks"])
        return self.answer(request, experiment)


class BlockTrapping(ApiView):
    """Trapping questions of an ACR / DCR block (ITU-T P.808 §6.3.8): a message uploaded with the
    category it asks for; built into trials when the experiment opens."""

    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(
        request={"multipart/form-data": s.TrappingUploadSerializer},
        parameters=ABX_PARAMETERS,
        responses={201: s.BlocksSerializer, **ERRORS},
        summary="Add a trapping question to block n (draft or rendered experiments only)",
    )
    def post(self, request, pk: int, block: int):
        experiment = self.experiment(pk)
        upload = request.FILES.get("message")
        if upload is None:
            raise errors.FieldError("message", "no file given (multipart field message)")
        experiment = block_settings.add_trapping(
            experiment=experiment, block=block, upload=upload, answer=request.data.get("answer")
        )
        response = ExperimentBlocks.answer(request, experiment)
        response.status_code = 201
        return response


class BlockTrappingItem(ApiView):
    parser_classes = [StrictJSONParser]

    @extend_schema(
        parameters=ABX_PARAMETERS,
        responses={200: s.BlocksSerializer, **ERRORS},
        summary="Remove block n's trapping question k and its message",
    )
    def delete(self, request, pk: int, block: int, number: int):
        experiment = block_settings.remove_trapping(experiment=self.experiment(pk), block=block, number=number)
        return ExperimentBlocks.answer(request, experiment)


class ExcerptList(ApiView):
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(responses={200: s.ExcerptSerializer(many=True), 404: ERRORS[404]}, summary="List excerpts")
    def get(self, request, pk: int):
        return Response(s.ExcerptSerializer(self.experiment(pk).excerpts.all(), many=True).data)

    @extend_schema(
        request={"multipart/form-data": s.ExcerptUploadSerializer},
        responses={201: s.ExcerptSerializer, **ERRORS},
        summary="Upload an excerpt (dry + device recording)",
    )
    def post(self, request, pk: int):
        experiment = self.experiment(pk)
        form = s.ExcerptUploadSerializer(data=request.data)
        if not form.is_valid():
            return self.bad(form)
        d = form.validated_data
        excerpt = uploads.add_excerpt(
            experiment=experiment,
            name=d["name"],
            dry=d["dry"],
            reference=d["reference"],
            is_training=d["is_training"],
        )
        return Response(s.ExcerptSerializer(excerpt).data, status=201)


class CheckpointList(ApiView):
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(responses={200: s.CheckpointSerializer(many=True), 404: ERRORS[404]}, summary="List checkpoints")
    def get(self, request, pk: int):
        return Response(s.CheckpointSerializer(self.experiment(pk).checkpoints.all(), many=True).data)

    @extend_schema(
        request={"multipart/form-data": s.CheckpointUploadSerializer},
        responses={201: s.CheckpointSerializer, **ERRORS},
        summary="Upload a checkpoint (any format the model runner reads)",
    )
    def post(self, request, pk: int):
        experiment = self.experiment(pk)
        form = s.CheckpointUploadSerializer(data=request.data)
        if not form.is_valid():
            return self.bad(form)
        d = form.validated_data
        ckpt = uploads.add_checkpoint(
            experiment=experiment,
            name=d["name"],
            file=d["file"],
            config=d["config"],
            sample_rate=d["sample_rate"],
            slimmable_size=d["slimmable_size"],
        )
        return Response(s.CheckpointSerializer(ckpt).data, status=201)


class ConditionList(ApiView):
    parser_classes = [StrictJSONParser, FormParser, MultiPartParser]

    @extend_schema(responses={200: s.ConditionSerializer(many=True), 404: ERRORS[404]}, summary="List conditions")
    def get(self, request, pk: int):
        return Response(s.ConditionSerializer(self.experiment(pk).conditions.all(), many=True).data)

    @extend_schema(
        request=s.ConditionCreateSerializer,
        responses={201: s.ConditionSerializer, **ERRORS},
        summary="Define a model condition (checkpoint + knob values + label)",
    )
    def post(self, request, pk: int):
        experiment = self.experiment(pk)
        form = s.ConditionCreateSerializer(data=request.data)
        if not form.is_valid():
            return self.bad(form)
        d = form.validated_data
        checkpoint = experiment.checkpoints.filter(pk=d["checkpoint"]).first()
        if checkpoint is None:
            raise errors.ServiceError(f"checkpoint: {d['checkpoint']} is not a checkpoint of this experiment")
        condition = experiments.add_model_condition(
            experiment=experiment,
            checkpoint=checkpoint,
            label=d["label"],
            knobs=d["knobs"],
            display_name=d["display_name"],
        )
        return Response(s.ConditionSerializer(condition).data, status=201)


class ConditionIR(ApiView):
    parser_classes = [MultiPartParser, FormParser]

    def condition(self, pk: int, condition_id: int):
        condition = self.experiment(pk).conditions.filter(pk=condition_id).first()
        if condition is None:
            raise NotFound("no such condition in this experiment")
        return condition

    @extend_schema(
        request={"multipart/form-data": s.ConditionIRUploadSerializer},
        responses={200: s.ConditionSerializer, **ERRORS},
        summary="Attach or replace a model condition's cabinet impulse response (its cells render again)",
    )
    def put(self, request, pk: int, condition_id: int):
        condition = self.condition(pk, condition_id)
        form = s.ConditionIRUploadSerializer(data=request.data)
        if not form.is_valid():
            return self.bad(form)
        condition = cabinet.set_condition_ir(condition=condition, file=form.validated_data["file"])
        return Response(s.ConditionSerializer(condition).data)

    @extend_schema(
        request=None,
        responses={200: s.ConditionSerializer, **ERRORS},
        summary="Remove a model condition's cabinet impulse response (its cells render again)",
    )
    def delete(self, request, pk: int, condition_id: int):
        condition = cabinet.remove_condition_ir(condition=self.condition(pk, condition_id))
        return Response(s.ConditionSerializer(condition).data)


class Render(ApiView):
    @extend_schema(
        request=None,
        parameters=[
            OpenApiParameter("force", bool, description="Render every cell again, not only what changed or failed.")
        ],
        responses={202: s.RenderStatusSerializer, **ERRORS},
        summary="Queue the render jobs for what changed or failed (answers with the render status)",
    )
    def post(self, request, pk: int):
        experiment = self.experiment(pk)
        force = request.query_params.get("force", "").lower() in ("1", "true", "yes")
        rendering.start_render(experiment=experiment, force=force)
        return Response(selectors.render_progress(Experiment.objects.get(pk=experiment.pk)), status=202)


class RenderCancel(ApiView):
    @extend_schema(
        request=None,
        responses={200: s.RenderStatusSerializer, **ERRORS},
        summary="Cancel rendering (finished cells are kept; the experiment becomes editable)",
    )
    def post(self, request, pk: int):
        experiment = rendering.cancel_render(experiment=self.experiment(pk))
        return Response(selectors.render_progress(experiment))


class JobRetry(ApiView):
    @extend_schema(
        request=None,
        responses={202: s.RenderStatusSerializer, **ERRORS},
        summary="Queue a failed or cancelled render job again",
    )
    def post(self, request, pk: int, job_id: int):
        experiment = self.experiment(pk)
        job = experiment.render_jobs.filter(pk=job_id).first()
        if job is None:
            raise NotFound("no such render job in this experiment")
        rendering.retry_job(job=job)
        return Response(selectors.render_progress(Experiment.objects.get(pk=experiment.pk)), status=202)


class Open(ApiView):
    @extend_schema(
        request=None, responses={200: s.ExperimentSerializer, **ERRORS}, summary="Publish: open the participant link"
    )
    def post(self, request, pk: int):
        experiment = experiments.open_experiment(experiment=self.experiment(pk))
        return Response(s.ExperimentSerializer(experiment, context={"request": request}).data)


class Close(ApiView):
    @extend_schema(request=None, responses={200: s.ExperimentSerializer, **ERRORS}, summary="Close: stop new sessions")
    def post(self, request, pk: int):
        experiment = experiments.close_experiment(experiment=self.experiment(pk))
        return Response(s.ExperimentSerializer(experiment, context={"request": request}).data)


class Status(ApiView):
    @extend_schema(
        responses={200: s.StatusSerializer, 404: ERRORS[404]},
        summary="Render progress (overall and per job) and participant counts",
    )
    def get(self, request, pk: int):
        experiment = self.experiment(pk)
        return Response(
            selectors.render_progress(experiment) | {"participants": selectors.participant_summary(experiment)}
        )


class Metrics(ApiView):
    @extend_schema(
        responses={200: s.MetricsSerializer, 404: ERRORS[404]},
        summary="Objective metrics: the long table (condition, item, metric, value)",
    )
    def get(self, request, pk: int):
        return Response({"metrics": selectors.metrics_rows(self.experiment(pk))})


class Participants(ApiView):
    @extend_schema(
        responses={200: s.ParticipantListSerializer, 404: ERRORS[404]},
        summary="Participant sessions: stage, times, trials answered, quality flags, exclusion, pilot",
    )
    def get(self, request, pk: int):
        experiment = self.experiment(pk)
        rows = s.ParticipantRowSerializer(selectors.participants_detail(experiment), many=True).data
        return Response({"experiment": experiment.pk, "participants": rows})


class Ratings(ApiView):
    renderer_classes = [JSONRenderer, CSVRenderer]

    @extend_schema(
        parameters=[OpenApiParameter("format", str, enum=["json", "csv"], required=False)],
        responses={
            (200, "application/json"): s.RatingsSerializer,
            (200, "text/csv"): OpenApiTypes.STR,
            404: ERRORS[404],
        },
        summary="Ratings: the long table (participant, item, condition, kind, rating); ?format=csv for CSV",
    )
    def get(self, request, pk: int, as_csv: bool = False):
        experiment = self.experiment(pk)
        if as_csv or getattr(request.accepted_renderer, "format", "") == "csv":
            response = HttpResponse(selectors.ratings_csv(experiment), content_type="text/csv; charset=utf-8")
            response["Content-Disposition"] = f'attachment; filename="experiment-{experiment.pk}-ratings.csv"'
            return response
        return Response(
            {
                "experiment": experiment.pk,
                "ratings": selectors.ratings_rows(experiment),
                "catch_trials": selectors.catch_rows(experiment),
                "repeat_trials": selectors.repeat_rows(experiment),
                "p808_checks": selectors.check_rows(experiment),
                "comments": selectors.comment_rows(experiment),
            }
        )


class RatingsCSV(Ratings):
    @extend_schema(responses={(200, "text/csv"): OpenApiTypes.STR, 404: ERRORS[404]}, summary="Ratings as CSV")
    def get(self, request, pk: int, as_csv: bool = True):
        return super().get(request, pk, as_csv=True)


class MushraCSV(ApiView):
    renderer_classes = [CSVRenderer, JSONRenderer]

    @extend_schema(
        responses={(200, "text/csv"): OpenApiTypes.STR, 404: ERRORS[404]},
        summary="Ratings in webMUSHRA's mushra.csv layout",
    )
    def get(self, request, pk: int):
        response = HttpResponse(results_csv.mushra_csv(self.experiment(pk)), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="mushra.csv"'
        return response


class WebMushraFile(ApiView):
    renderer_classes = [CSVRenderer, JSONRenderer]

    @extend_schema(
        responses={(200, "text/csv"): OpenApiTypes.STR, 404: ERRORS[404]},
        summary="Results in one of webMUSHRA's files: mushra.csv, bs1116.csv, paired_comparison.csv, lss.csv, lms.csv",
    )
    def get(self, request, pk: int, name: str):
        experiment = self.experiment(pk)
        write = results_csv.WEBMUSHRA_FILES.get(name)
        if write is None:
            raise NotFound(f"no webMUSHRA file {name!r}; one of {', '.join(results_csv.WEBMUSHRA_FILES)}")
        response = HttpResponse(write(experiment), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        return response


class ReportView(ApiView):
    @extend_schema(
        responses={200: s.ReportSerializer, 404: ERRORS[404]},
        summary="The latest report bundle's status (and its download URL when ready)",
    )
    def get(self, request, pk: int):
        report = self.experiment(pk).reports.first()
        if report is None:
            raise NotFound("no report requested yet; POST to build one")
        return Response(s.ReportSerializer(report, context={"request": request}).data)

    @extend_schema(request=None, responses={202: s.ReportSerializer, **ERRORS}, summary="Build a report bundle")
    def post(self, request, pk: int):
        report = reports.request_report(experiment=self.experiment(pk), user=request.user)
        return Response(s.ReportSerializer(report, context={"request": request}).data, status=202)


class ReportDownload(ApiView):
    @extend_schema(
        responses={(200, "application/zip"): OpenApiTypes.BINARY, 404: ERRORS[404]},
        summary="Download a finished report bundle (ZIP)",
    )
    def get(self, request, pk: int, report_id: int):
        return report_file_response(access.report_for(self.experiment(pk), report_id))
