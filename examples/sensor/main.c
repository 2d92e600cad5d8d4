/* Calibrate raw sensor readings on the device with a header exported by qmtik.

   Build (after `qmtik export-c sensor.qmt -o sensor.h`):
       cc -std=c99 -O2 main.c -o sensor -lm && ./sensor
   Each row goes the way it goes in firmware: raw readings (floats, in the units the model was
   trained on) to int8 codes with sensor_quantize_input, the integer network, then the int8
   score back to degrees C with sensor_probabilities (for a linear output: the dequantized value). */
#define SENSOR_IMPLEMENTATION
#include "sensor.h"

#include <stdio.h>

#define ROWS 4

/* t_raw (degrees C), rh_raw (%), t_board (degrees C): the rows of rows.csv. */
static const float readings[ROWS][SENSOR_INPUTS] = {
    {15.64f, 89.92f, 14.33f},
    {50.19f, 27.70f, 56.72f},
    {43.37f, 12.04f, 46.55f},
    {34.11f, 70.77f, 32.44f},
};

int main(void)
{
    int8_t input[SENSOR_INPUTS], score[SENSOR_OUTPUTS];
    int8_t scratch[SENSOR_SCRATCH_BYTES];       /* no malloc: the caller owns all memory */
    float t_true[SENSOR_OUTPUTS];
    int row, k;

    for (row = 0; row < ROWS; ++row) {
        sensor_quantize_input(readings[row], input);    /* raw readings to int8, exactly as in Python */
        (void)sensor_predict(input, score, scratch);    /* a regression: read the score, not the class */
        sensor_probabilities(score, t_true);            /* the int8 score in degrees C */
        printf("raw");
        for (k = 0; k < SENSOR_INPUTS; ++k)
            printf(" %.2f", (double)readings[row][k]);
        printf(" -> codes");
        for (k = 0; k < SENSOR_INPUTS; ++k)
            printf(" %d", input[k]);
        printf(" -> score %d -> t_true %.2f C\n", score[0], (double)t_true[0]);
    }
    return 0;
}
