"""The loyalty.v1.LoyaltyService servicer: read, route, answer. No business logic."""

from __future__ import annotations

from collections.abc import Callable

import grpc
from loyalty.actors.ledger.commands import Command
from loyalty.actors.ledger.outcomes import Outcome
from loyalty.actors.ledger.program import DEFAULT_PROGRAM, CompiledProgram
from loyalty.actors.ledger.status import Status
from loyalty.server import errors
from loyalty.server.gateway import requests
from loyalty.server.gateway import responses
from loyalty.server.errors import FieldViolation, GatewayError
from loyalty.server.errors import abort as _abort
from loyalty.server.gateway.routing import CommandRouter
from loyalty.server.limits import BATCH_ITEMS_MAX
from loyalty.v1 import loyalty_pb2 as pb
from loyalty.v1 import loyalty_pb2_grpc as pb_grpc


# Statuses GetOperation reports as its own error: nothing is stored to show.
_NOT_STORED = frozenset({Status.MEMBER_NOT_FOUND, Status.OPERATION_NOT_FOUND})


class LoyaltyService(pb_grpc.LoyaltyServiceServicer):
    """Every RPC: validate into a command, send it to its shard, map the outcome."""

    def __init__(self, router: CommandRouter, program: CompiledProgram | None = None) -> None:
        self._router = router
        self._program = program or CompiledProgram(DEFAULT_PROGRAM)

    async def _outcome(
        self,
        request,
        context: grpc.aio.ServicerContext,
        read: Callable[..., Command],
        *,
        errors_from: frozenset[Status] | None = None,
    ) -> Outcome:
        """The command's outcome, or an abort with the matching error status (for any
        failed outcome, or only for statuses in ``errors_from`` when given)."""
        try:
            command = read(request)
        except FieldViolation as violation:
            await _abort(context, errors.invalid_argument(violation))
        try:
            outcome = await self._router.execute(command)
        except GatewayError as error:
            await _abort(context, errors.rpc_status(error.status, error.message))
        failed = outcome.status != Status.OK
        if failed and (errors_from is None or outcome.status in errors_from):
            await _abort(context, responses.error_status(outcome))
        return outcome

    async def _mutation(self, request, context, read):
        return responses.mutation_response(await self._outcome(request, context, read))

    async def EnrollMember(self, request, context):
        return await self._mutation(request, context, requests.enroll_member)

    async def Earn(self, request, context):
        return await self._mutation(request, context, requests.earn)

    async def Redeem(self, request, context):
        return await self._mutation(request, context, requests.redeem)

    async def Reserve(self, request, context):
        return await self._mutation(request, context, requests.reserve)

    async def Capture(self, request, context):
        return await self._mutation(request, context, requests.capture)

    async def Release(self, request, context):
        return await self._mutation(request, context, requests.release)

    async def Reverse(self, request, context):
        return await self._mutation(request, context, requests.reverse)

    async def Adjust(self, request, context):
        return await self._mutation(request, context, requests.adjust)

    async def GetMember(self, request, context):
        return responses.member(await self._outcome(request, context, requests.get_member))

    async def GetBalance(self, request, context):
        outcome = await self._outcome(request, context, requests.get_balance)
        return responses.balance(outcome.balance)

    async def ListTransactions(self, request, context):
        outcome = await self._outcome(request, context, requests.list_transactions)
        return responses.transactions(request.member_id, outcome)

    async def GetOperation(self, request, context):
        # A stored failure is an answer (the request was applied and failed), not an error.
        outcome = await self._outcome(
            request, context, requests.get_operation, errors_from=_NOT_STORED
        )
        return responses.operation(request.member_id, request.request_id, outcome)

    async def SimulateEarn(self, request, context):
        outcome = await self._outcome(request, context, requests.simulate_earn)
        return responses.earn_simulation(outcome)

    async def QuoteRedemption(self, request, context):
        try:
            query = requests.quote_redemption(request)
        except FieldViolation as violation:
            await _abort(context, errors.invalid_argument(violation))
        currency, amount_minor, points = query.currency, query.amount_minor, query.points
        if amount_minor is not None:
            points = self._program.points_for_amount(currency, amount_minor)
        else:
            amount_minor = self._program.value_of_points(currency, points)
        if points is None or amount_minor is None:
            message = f"the program has no redemption value for {currency}"
            await _abort(context, errors.rpc_status(Status.CURRENCY_NOT_SUPPORTED, message))
        return pb.QuoteRedemptionResponse(currency=currency, amount_minor=amount_minor, points=points)

    async def Batch(self, request: pb.BatchRequest, context):
        items = request.items
        if len(items) > BATCH_ITEMS_MAX:
            violation = FieldViolation("items", f"at most {BATCH_ITEMS_MAX} items per Batch")
            await _abort(context, errors.invalid_argument(violation))
        commands, indexes, violations = requests.batch_items(items)
        try:
            chunks = self._router.submit_chunks(commands)
        except GatewayError as error:
            await _abort(context, errors.rpc_status(error.status, error.message))
        # Each item's answer, by item index: an Outcome, or the item's error.
        if len(chunks) == 1 and not violations:
            answers = await chunks[0].answers  # every item, in order
        else:
            answers = [None] * len(items)
            for index, violation in violations.items():
                answers[index] = errors.invalid_argument(violation)
            for positions, chunk_answers in chunks:
                if violations:  # commands are not items one for one
                    positions = [indexes[position] for position in positions]
                for index, answer in zip(positions, await chunk_answers, strict=True):
                    answers[index] = answer
        return responses.batch_response(answers)
